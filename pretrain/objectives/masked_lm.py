"""MLM with a choice of masking unit and static or dynamic noise: whole-word (BERT wwm), n-gram (ALBERT),
SpanBERT's geometric spans, optionally with its span-boundary objective (`sbo`: a pretraining-only head, an
added term weighted `sbo_weight`); options in `objective.masking` (unit, static, mask_prob, ...)."""

from functools import partial

from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig  # noqa: F401  (its config block)
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.heads import SpanBoundaryHead
from pretrain.objectives.losses import mlm_loss, mlm_sbo_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    m = ctx.manifest
    return MaskedLMCollator(cfg.masking, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


def loss(cfg):
    return partial(mlm_sbo_loss, sbo_weight=cfg.masking.sbo_weight) if cfg.masking.sbo else mlm_loss


def heads(cfg, model):
    return {"sbo": SpanBoundaryHead(model.config, model.embeddings.word)} if cfg.masking.sbo else {}


OBJECTIVE = Objective("masked_lm", make_collator, loss, needs=frozenset({"encoder", "mlm_head"}),
                      data="format 2 (unit token: any)", heads=heads,
                      description="MLM by whole word, n-gram or SpanBERT span (+ SBO); static or dynamic "
                                  "(objective.masking)")

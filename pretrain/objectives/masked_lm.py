"""MLM with a choice of masking unit and static or dynamic noise: whole-word (BERT wwm), n-gram (ALBERT),
SpanBERT's geometric spans; options in `objective.masking` (unit, static, mask_prob, ...)."""

from data_pipeline.collators.masked_lm import MaskedLMCollator, MaskingConfig  # noqa: F401  (its config block)
from data_pipeline.errors import UserError
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.losses import mlm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    if cfg.masking.sbo:
        raise UserError("objective.masking.sbo: the span-boundary objective's head is not built yet; set it false")
    m = ctx.manifest
    return MaskedLMCollator(cfg.masking, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("masked_lm", make_collator, lambda cfg: mlm_loss, needs=frozenset({"encoder", "mlm_head"}),
                      data="format 2 (unit token: any)",
                      description="MLM by whole word, n-gram or SpanBERT span; static or dynamic (objective.masking)")

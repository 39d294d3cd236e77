"""UniLM: bidirectional, seq2seq, left-to-right and right-to-left masks in one encoder, mixed per sample
(`objective.unilm.shares`), segment embeddings for A and B; masking options in `objective.mlm`. The [B, T, T]
masks replace the padding mask; they exist only in pretraining."""

from data_pipeline.collators.unilm import UniLMCollator, UniLMConfig  # noqa: F401  (its config block)
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.losses import mlm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    m = ctx.manifest
    return UniLMCollator(cfg.unilm, cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("unilm", make_collator, lambda cfg: mlm_loss,
                      needs=frozenset({"encoder", "mlm_head", "token_types"}),
                      data="any",
                      logits_only=True,
                      description="UniLM: bidirectional, seq2seq, left-to-right and right-to-left masks per sample")

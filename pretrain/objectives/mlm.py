"""Masked language modelling (BERT, RoBERTa, ALBERT): options in `objective.mlm`."""

from data_pipeline.collators.mlm import MLMCollator, MLMConfig  # noqa: F401  (its config block)
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.losses import mlm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    return MLMCollator(cfg.mlm, ctx.manifest.special_tokens, ctx.manifest.vocab_size, ctx.seq_len, ctx.seed,
                       doc_index=ctx.recurrent)


OBJECTIVE = Objective("mlm", make_collator, lambda cfg: mlm_loss, needs=frozenset({"encoder", "mlm_head"}),
                      data="any",
                      logits_only=True,
                      description="BERT/RoBERTa masked LM: 15% of tokens, 80/10/10, new masks every epoch")

"""XLM's translation LM on parallel text: both sides in one row, positions restarting at the second, each
side's language as its token type, MLM across both; masking options in `objective.mlm`."""

from data_pipeline.collators.tlm import TLMCollator
from pretrain.objectives.base import Objective, require_language_types, require_mask_token
from pretrain.objectives.losses import mlm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    require_language_types(cfg.name, ctx.manifest, ctx.type_vocab_size)
    m = ctx.manifest
    return TLMCollator(cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("tlm", make_collator, lambda cfg: mlm_loss,
                      needs=frozenset({"encoder", "mlm_head", "token_types"}),
                      data="parallel",
                      logits_only=True,
                      description="XLM's translation LM: MLM over both sides of a parallel pair")

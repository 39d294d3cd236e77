"""XLNet's permuted language modelling (Yang et al. 2019) for the encoder families: a factorization order per
sample, partial prediction (the last plm_probability = 1/K of the order), two-stream attention (the model's
query stream, `model.query_stream: true`, which exists only in pretraining). Options in `objective.plm`."""

from data_pipeline.collators.permutation_lm import PermutationLMCollator, PermutationLMConfig  # noqa: F401
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.losses import permuted_lm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)  # the rows' [CLS] and [SEP]
    return PermutationLMCollator(cfg.plm, ctx.manifest.special_tokens, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("permuted_lm", make_collator, lambda cfg: permuted_lm_loss,
                      needs=frozenset({"encoder", "mlm_head", "query_stream"}),
                      data="any",
                      description="XLNet's permuted LM: factorization orders, partial prediction, two streams",
                      model_settings=(("query_stream", True),))

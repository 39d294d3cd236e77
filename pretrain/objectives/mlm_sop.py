"""MLM plus ALBERT's sentence-order prediction on sentence pairs; MLM options in `objective.mlm`."""

from functools import partial

from data_pipeline.collators.sentence_pair import SentencePairCollator
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import mlm_pair_loss


def make_collator(cfg, ctx):
    m = ctx.manifest
    return SentencePairCollator(cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed, "sop")


OBJECTIVE = Objective("mlm_sop", make_collator,
                      lambda cfg: partial(mlm_pair_loss, task="sop", pair_weight=cfg.pair.weight),
                      needs=frozenset({"encoder", "mlm_head", "sop_head"}), model_head="pretraining",
                      data="any (format 2: cut at a sentence)",
                      description="ALBERT's MLM + sentence-order prediction, split at a sentence start")

"""BART's text infilling (with sentence permutation): options in `objective.infilling`."""

from data_pipeline.collators.text_infilling import InfillingConfig, TextInfillingCollator  # noqa: F401
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import seq2seq_loss


def make_collator(cfg, ctx):
    return TextInfillingCollator(cfg.infilling, ctx.manifest.special_tokens, ctx.seq_len, ctx.seed,
                                 doc_index=ctx.recurrent)


OBJECTIVE = Objective("text_infilling", make_collator, lambda cfg: seq2seq_loss,
                      needs=frozenset({"encoder_decoder", "reconstruction_targets"}),
                      data="any",
                      description="BART's text infilling with sentence permutation (the original collator)")

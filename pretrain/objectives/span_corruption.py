"""T5's span corruption: options in `objective.span`."""

from data_pipeline.collators.span_corruption import SpanCorruptionCollator, SpanCorruptionConfig  # noqa: F401
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import seq2seq_loss


def make_collator(cfg, ctx):
    return SpanCorruptionCollator(cfg.span, ctx.manifest.special_tokens, ctx.seq_len, ctx.seed,
                                  doc_index=ctx.recurrent)


OBJECTIVE = Objective("span_corruption", make_collator, lambda cfg: seq2seq_loss,
                      needs=frozenset({"encoder_decoder", "sentinel_targets"}),
                      data="any",
                      description="T5's span corruption: sentinel-delimited spans, 15% noise, mean span 3")

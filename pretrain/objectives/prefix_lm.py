"""T5's prefix LM: the encoder reads a random prefix, the decoder writes the rest (no options)."""

from data_pipeline.collators.prefix_lm import PrefixLMCollator
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import seq2seq_loss


# T5 only for now: the collator starts the decoder with pad, T5's decoder start (BART's is </s>).
def make_collator(cfg, ctx):
    return PrefixLMCollator(ctx.manifest.special_tokens, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("prefix_lm", make_collator, lambda cfg: seq2seq_loss,
                      needs=frozenset({"encoder_decoder", "sentinel_targets"}),
                      data="any",
                      description="T5's prefix LM: the encoder reads a random prefix, the decoder writes the rest")

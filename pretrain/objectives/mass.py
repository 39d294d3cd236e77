"""MASS (Song et al. 2019) for T5 and BART: a contiguous fragment of about half the segment is masked in the
encoder; the decoder sees only the fragment shifted right, at the fragment's original positions
(`decoder_position_ids`: BART's learned decoder positions and T5's buckets read them). Options in
`objective.mass`."""

from data_pipeline.collators.mass import MassCollator, MassConfig  # noqa: F401  (its config block)
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import seq2seq_loss


def make_collator(cfg, ctx):
    m = ctx.manifest
    return MassCollator(cfg.mass, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("mass", make_collator, lambda cfg: seq2seq_loss,
                      needs=frozenset({"encoder_decoder", "decoder_positions"}),
                      data="any",
                      description="MASS: the decoder writes a masked half-segment fragment at its own positions")

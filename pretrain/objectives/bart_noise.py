"""BART's five noises (token masking, token deletion, text infilling, sentence permutation, document rotation)
in fairseq's order; options in `objective.bart` (defaults: BART's released recipe)."""

from data_pipeline.collators.bart_noise import BartNoiseCollator, BartNoiseConfig  # noqa: F401  (its config block)
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import seq2seq_loss


def make_collator(cfg, ctx):
    m = ctx.manifest
    return BartNoiseCollator(cfg.bart, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("bart_noise", make_collator, lambda cfg: seq2seq_loss,
                      needs=frozenset({"encoder_decoder", "reconstruction_targets"}),
                      data="format 2 (mask_length subword, permute 0: any)",
                      description="BART's five noises: mask, delete, infill, permute, rotate (objective.bart)")

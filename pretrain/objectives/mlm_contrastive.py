"""DeCLUTR's MLM + sentence-level contrastive term: two adjacent spans of one document per sample (anchor and
positive), MLM on the anchor, InfoNCE between the mean-pooled views with the micro-batch's other rows as
negatives. Options in `objective.contrastive` (weight, temperature), masking in `objective.mlm`."""

from dataclasses import dataclass
from functools import partial

from data_pipeline.collators.contrastive import ContrastiveViewsCollator
from data_pipeline.errors import UserError
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.losses import mlm_contrastive_loss


@dataclass
class ContrastiveConfig:
    weight: float = 1.0  # the InfoNCE term's weight beside MLM's (DeCLUTR sums them: 1)
    temperature: float = 0.05  # of the cosine similarities (DeCLUTR's and SimCSE's 0.05)

    def __post_init__(self):
        if not self.weight >= 0:
            raise UserError(f"objective.contrastive.weight must be >= 0, got {self.weight}")
        if not self.temperature > 0:
            raise UserError(f"objective.contrastive.temperature must be positive, got {self.temperature}")


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    m = ctx.manifest
    return ContrastiveViewsCollator(cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


def loss(cfg):
    return partial(mlm_contrastive_loss, weight=cfg.contrastive.weight, temperature=cfg.contrastive.temperature)


OBJECTIVE = Objective("mlm_contrastive", make_collator, loss, needs=frozenset({"encoder", "mlm_head"}),
                      data="any (format 2: cut at a sentence)",
                      description="DeCLUTR: MLM on an anchor span + InfoNCE against the adjacent span, "
                                  "in-batch negatives")

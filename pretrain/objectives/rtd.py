"""ELECTRA's replaced-token detection: MLM masking (options in `objective.mlm`) for the generator, and the
discriminator's weight in `objective.rtd`."""

from dataclasses import dataclass
from functools import partial

from data_pipeline.errors import UserError
from pretrain.objectives.mlm import make_collator as mlm_collator
from pretrain.objectives.base import Objective
from pretrain.objectives.losses import replaced_token_detection_loss


@dataclass
class RTDConfig:
    discriminator_weight: float = 50.0  # ELECTRA's lambda

    def __post_init__(self):
        if not self.discriminator_weight > 0:
            raise UserError(f"objective.rtd.discriminator_weight must be positive, got {self.discriminator_weight}")


def loss(cfg):
    return partial(replaced_token_detection_loss, discriminator_weight=cfg.rtd.discriminator_weight)


OBJECTIVE = Objective("rtd", mlm_collator, loss, needs=frozenset({"encoder", "rtd_heads"}),
                      data="any",
                      description="ELECTRA's replaced-token detection: generator MLM + discriminator")

"""The objectives registry: a config name -> (collator, loss head)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.errors import UserError
from data_pipeline.shards import Manifest
from pretrain.objectives.mlm import mlm_loss


@dataclass
class ObjectiveConfig:
    name: str = "mlm"  # one of OBJECTIVES
    mlm: MLMConfig = field(default_factory=MLMConfig)

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise UserError(f"objective.name {self.name!r} is not known; choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Objective:
    # (objective config, dataset manifest, model sequence length, seed) -> collator with a `raw_length`
    make_collator: Callable
    loss: Callable  # (model, batch) -> scalar loss


OBJECTIVES: dict[str, Objective] = {
    "mlm": Objective(
        make_collator=lambda cfg, manifest, seq_len, seed: MLMCollator(
            cfg.mlm, manifest.special_tokens, manifest.vocab_size, seq_len, seed),
        loss=mlm_loss,
    ),
}


def build_objective(cfg: ObjectiveConfig, manifest: Manifest, seq_len: int, seed: int):
    """(collator, loss) for the configured objective."""
    objective = OBJECTIVES[cfg.name]
    return objective.make_collator(cfg, manifest, seq_len, seed), objective.loss

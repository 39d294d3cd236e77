"""The objectives registry: a config name -> (collator, loss head), and the model families it trains.

Each family's native objective: mlm (BERT, RoBERTa, ALBERT), mlm_nsp (BERT with BertForPreTraining's heads),
mlm_sop (ALBERT's pretraining), rtd (ELECTRA), span_corruption (T5), text_infilling (BART).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from data_pipeline.collators.mlm import MLMCollator, MLMConfig
from data_pipeline.collators.sentence_pair import SentencePairCollator
from data_pipeline.collators.span_corruption import SpanCorruptionCollator, SpanCorruptionConfig
from data_pipeline.collators.text_infilling import InfillingConfig, TextInfillingCollator
from data_pipeline.errors import UserError
from data_pipeline.shards import Manifest
from pretrain.objectives.losses import mlm_loss, mlm_pair_loss, replaced_token_detection_loss, seq2seq_loss


@dataclass
class RTDConfig:
    discriminator_weight: float = 50.0  # ELECTRA's lambda

    def __post_init__(self):
        if not self.discriminator_weight > 0:
            raise UserError(f"objective.rtd.discriminator_weight must be positive, got {self.discriminator_weight}")


@dataclass
class ObjectiveConfig:
    name: str = "mlm"  # one of OBJECTIVES
    mlm: MLMConfig = field(default_factory=MLMConfig)  # mlm, mlm_nsp, mlm_sop, rtd
    rtd: RTDConfig = field(default_factory=RTDConfig)
    span: SpanCorruptionConfig = field(default_factory=SpanCorruptionConfig)
    infilling: InfillingConfig = field(default_factory=InfillingConfig)

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise UserError(f"objective.name {self.name!r} is not known; choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Objective:
    # (objective config, dataset manifest, model sequence length, seed) -> collator with a `raw_length`
    make_collator: Callable
    loss: Callable  # (objective config) -> ((model, batch) -> scalar loss)
    families: tuple[str, ...]  # model families it can train
    model_head: str = "mlm"  # the model.head it needs (BERT/ALBERT)


def _mlm_collator(cfg, manifest, seq_len, seed):
    for role in ("cls", "sep", "mask"):
        if role not in manifest.special_tokens:
            raise UserError(f"objective {cfg.name} needs a tokenizer with a mask token; prepare the data with "
                            "--tokenizer-kind wordpiece or bytelevel_bpe")
    return MLMCollator(cfg.mlm, manifest.special_tokens, manifest.vocab_size, seq_len, seed)


OBJECTIVES: dict[str, Objective] = {
    "mlm": Objective(_mlm_collator, lambda cfg: mlm_loss, ("bert", "roberta", "albert")),
    "mlm_nsp": Objective(
        lambda cfg, m, seq_len, seed: SentencePairCollator(cfg.mlm, m.special_tokens, m.vocab_size, seq_len, seed,
                                                           "nsp"),
        lambda cfg: mlm_pair_loss, ("bert",), model_head="pretraining"),
    "mlm_sop": Objective(
        lambda cfg, m, seq_len, seed: SentencePairCollator(cfg.mlm, m.special_tokens, m.vocab_size, seq_len, seed,
                                                           "sop"),
        lambda cfg: mlm_pair_loss, ("albert",), model_head="pretraining"),
    "rtd": Objective(_mlm_collator,
                     lambda cfg: partial(replaced_token_detection_loss,
                                         discriminator_weight=cfg.rtd.discriminator_weight), ("electra",)),
    "span_corruption": Objective(
        lambda cfg, m, seq_len, seed: SpanCorruptionCollator(cfg.span, m.special_tokens, seq_len, seed),
        lambda cfg: seq2seq_loss, ("t5",)),
    "text_infilling": Objective(
        lambda cfg, m, seq_len, seed: TextInfillingCollator(cfg.infilling, m.special_tokens, seq_len, seed),
        lambda cfg: seq2seq_loss, ("bart",)),
}
NATIVE = {"bert": "mlm", "roberta": "mlm", "albert": "mlm_sop", "electra": "rtd", "t5": "span_corruption",
          "bart": "text_infilling"}


def check_fits(cfg: ObjectiveConfig, model) -> None:
    """An objective trains only the families (and heads) it was written for."""
    objective = OBJECTIVES[cfg.name]
    if model.family not in objective.families:
        raise UserError(f"objective.name={cfg.name} does not train model.family={model.family} (it trains "
                        f"{', '.join(objective.families)}); {model.family}'s native objective is "
                        f"{NATIVE[model.family]}")
    if model.head != objective.model_head:
        raise UserError(f"objective.name={cfg.name} needs model.head={objective.model_head}, got {model.head}")


def build_objective(cfg: ObjectiveConfig, manifest: Manifest, seq_len: int, seed: int):
    """(collator, loss) for the configured objective."""
    objective = OBJECTIVES[cfg.name]
    return objective.make_collator(cfg, manifest, seq_len, seed), objective.loss(cfg)

"""The objectives: one module each in this package (see `base` for what a module provides).

`objective.name` selects one; each keeps its options in its own block of `ObjectiveConfig`. The families an
objective trains are those whose capabilities (`ModelConfig.capabilities`) include all it needs. Each family's
native objective: mlm (BERT, RoBERTa), mlm_sop (ALBERT), rtd (ELECTRA), span_corruption (T5), text_infilling
(BART); mlm_nsp trains BERT with BertForPreTraining's heads, permuted_lm an encoder with XLNet's query stream
(model.query_stream).

To add an objective: a module here with its config dataclass (if it has options), collator factory, loss and
needs; its entry in MODULES; its block as a field of ObjectiveConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from data_pipeline.errors import UserError
from pretrain.models.config import CAPABILITIES, FAMILIES, ModelConfig
from pretrain.objectives import (bart_noise, masked_lm, mass, mlm, mlm_contrastive, mlm_nsp, mlm_sop,
                                 multilingual_mlm, permuted_lm, prefix_lm, rtd, span_corruption, structbert,
                                 text_infilling, tlm, unilm)
from pretrain.objectives.base import CollatorContext, Objective

MODULES = (mlm, mlm_nsp, mlm_sop, rtd, span_corruption, text_infilling, masked_lm, prefix_lm, bart_noise, tlm, unilm,
           structbert, mlm_contrastive, multilingual_mlm, mass, permuted_lm)
OBJECTIVES: dict[str, Objective] = {m.OBJECTIVE.name: m.OBJECTIVE for m in MODULES}
NATIVE = {"bert": "mlm", "roberta": "mlm", "albert": "mlm_sop", "electra": "rtd", "t5": "span_corruption",
          "bart": "text_infilling"}


@dataclass
class PairTermConfig:
    weight: float = 1.0  # mlm_nsp / mlm_sop / structbert: the sentence term's weight beside MLM's (BERT, ALBERT: 1)

    def __post_init__(self):
        if not self.weight >= 0:
            raise UserError(f"objective.pair.weight must be >= 0, got {self.weight}")


@dataclass
class ObjectiveConfig:
    name: str = "mlm"  # one of OBJECTIVES
    mlm: mlm.MLMConfig = field(default_factory=mlm.MLMConfig)  # masking of mlm, mlm_nsp/sop, rtd, tlm, unilm, ...
    rtd: rtd.RTDConfig = field(default_factory=rtd.RTDConfig)  # rtd's discriminator weight
    span: span_corruption.SpanCorruptionConfig = field(default_factory=span_corruption.SpanCorruptionConfig)
    infilling: text_infilling.InfillingConfig = field(default_factory=text_infilling.InfillingConfig)
    masking: masked_lm.MaskingConfig = field(default_factory=masked_lm.MaskingConfig)  # masked_lm's units, static
    bart: bart_noise.BartNoiseConfig = field(default_factory=bart_noise.BartNoiseConfig)  # bart_noise's ratios
    pair: PairTermConfig = field(default_factory=PairTermConfig)  # the sentence-pair term's weight
    unilm: unilm.UniLMConfig = field(default_factory=unilm.UniLMConfig)  # unilm's shares of its four masks
    structbert: structbert.StructBERTConfig = field(default_factory=structbert.StructBERTConfig)  # its word task
    contrastive: mlm_contrastive.ContrastiveConfig = field(default_factory=mlm_contrastive.ContrastiveConfig)
    mass: mass.MassConfig = field(default_factory=mass.MassConfig)  # mass's fragment and its masking
    plm: permuted_lm.PermutationLMConfig = field(default_factory=permuted_lm.PermutationLMConfig)  # permuted_lm

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise UserError(f"objective.name {self.name!r} is not known; choose one of {', '.join(OBJECTIVES)}")


def trained_families(objective: Objective) -> list[str]:
    """The families whose capabilities include all the objective needs."""
    return [f for f in FAMILIES if objective.needs <= CAPABILITIES[f]]


def check_fits(cfg: ObjectiveConfig, model: ModelConfig) -> None:
    """An objective trains only models with the capabilities (and head) it needs."""
    objective = OBJECTIVES[cfg.name]
    if not objective.needs <= model.capabilities:
        raise UserError(f"objective.name={cfg.name} does not train model.family={model.family} (it trains "
                        f"{', '.join(trained_families(objective))}); {model.family}'s native objective is "
                        f"{NATIVE[model.family]}")
    if model.head != objective.model_head:
        raise UserError(f"objective.name={cfg.name} needs model.head={objective.model_head}, got {model.head}")
    for key, value in objective.model_settings:
        if getattr(model, key) != value:
            raise UserError(f"objective.name={cfg.name} needs model.{key}={str(value).lower()}, got "
                            f"{str(getattr(model, key)).lower()}; set it in the config (see "
                            f"configs/objectives/{cfg.name}.yaml)")
    if model.query_stream and ("query_stream", True) not in objective.model_settings:
        raise UserError(f"model.query_stream is XLNet's (objective.name=permuted_lm); objective.name={cfg.name} "
                        "does not use it: set model.query_stream=false")


def objective_heads(cfg: ObjectiveConfig):
    """model -> the configured objective's pretraining-only heads, or None when it has none."""
    objective = OBJECTIVES[cfg.name]
    if objective.heads is None:
        return None
    return lambda model: objective.heads(cfg, model)


def build_objective(cfg: ObjectiveConfig, context: CollatorContext):
    """(collator, loss) for the configured objective."""
    objective = OBJECTIVES[cfg.name]
    loss = objective.loss(cfg)
    if objective.logits_only:
        return objective.make_collator(cfg, context), partial(_logits_only, loss)
    return objective.make_collator(cfg, context), loss


def _logits_only(loss, model, batch):
    return loss(model, {**batch, "logits_only": True})


def reads_logits_only(cfg: ObjectiveConfig) -> bool:
    """Whether the objective's loss reads only the MLM logits (`Objective.logits_only`): for `batch_flops`."""
    return OBJECTIVES[cfg.name].logits_only

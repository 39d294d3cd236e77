"""Model construction: a config -> its model. The trainer, export and import build models only through here."""

from torch import nn

from pretrain.models.bart import BartForConditionalGeneration
from pretrain.models.config import FAMILIES, ModelConfig
from pretrain.models.electra import ElectraForPreTraining
from pretrain.models.encoder import EncoderForMaskedLM
from pretrain.models.output import ModelOutput  # noqa: F401  (the one output of every family)
from pretrain.models.t5 import T5ForConditionalGeneration


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model of `cfg.family`, freshly initialized (seed the torch RNG first). Pure: no file is read;
    `model.init_from`'s weights are a later step (`pretrain.construction.construct_model`)."""
    builders = {"bert": EncoderForMaskedLM, "roberta": EncoderForMaskedLM, "albert": EncoderForMaskedLM,
                "electra": ElectraForPreTraining, "t5": T5ForConditionalGeneration,
                "bart": BartForConditionalGeneration}
    assert set(builders) == set(FAMILIES)
    return builders[cfg.family](cfg)

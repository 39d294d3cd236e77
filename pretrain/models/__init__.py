"""Model construction: a config -> its model. The trainer, export and import build models only through here."""

from torch import nn

from pretrain.models.config import FAMILIES, ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    from pretrain.models.bart import BartForConditionalGeneration
    from pretrain.models.electra import ElectraForPreTraining
    from pretrain.models.encoder import EncoderForMaskedLM
    from pretrain.models.t5 import T5ForConditionalGeneration

    builders = {"bert": EncoderForMaskedLM, "roberta": EncoderForMaskedLM, "albert": EncoderForMaskedLM,
                "electra": ElectraForPreTraining, "t5": T5ForConditionalGeneration,
                "bart": BartForConditionalGeneration}
    assert set(builders) == set(FAMILIES)
    return builders[cfg.family](cfg)

"""Model construction: a config -> its model. The trainer, export and import build models only through here."""

from torch import nn

from pretrain.models.config import FAMILIES, ModelConfig
from pretrain.models.output import ModelOutput  # noqa: F401  (the one output of every family)


def build_model(cfg: ModelConfig, pretrained: bool = True) -> nn.Module:
    """The model of `cfg.family`, freshly initialized (seed the torch RNG first), then, when `pretrained` and
    `cfg.init_from` names a Hugging Face directory, loaded with its weights (what it lacks stays fresh)."""
    from pretrain.models.bart import BartForConditionalGeneration
    from pretrain.models.electra import ElectraForPreTraining
    from pretrain.models.encoder import EncoderForMaskedLM
    from pretrain.models.t5 import T5ForConditionalGeneration

    builders = {"bert": EncoderForMaskedLM, "roberta": EncoderForMaskedLM, "albert": EncoderForMaskedLM,
                "electra": ElectraForPreTraining, "t5": T5ForConditionalGeneration,
                "bart": BartForConditionalGeneration}
    assert set(builders) == set(FAMILIES)
    model = builders[cfg.family](cfg)
    if pretrained and cfg.init_from:
        from pretrain.import_hf import load_pretrained

        load_pretrained(model, cfg)
    return model

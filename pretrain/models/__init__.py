"""Model construction: a config -> its model. The trainer and export build models only through here."""

from torch import nn

from pretrain.models.bert import BertConfig, BertForMaskedLM


def build_model(cfg: BertConfig) -> nn.Module:
    return BertForMaskedLM(cfg)

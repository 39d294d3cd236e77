"""BERT's names for the shared encoder's config and model (the "bert" family of pretrain.models.encoder)."""

from pretrain.models.config import ModelConfig as BertConfig  # noqa: F401
from pretrain.models.encoder import EncoderForMaskedLM as BertForMaskedLM  # noqa: F401

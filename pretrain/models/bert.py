"""Names kept from the walking skeleton: BERT is the "bert" family of the shared encoder."""

from pretrain.models.config import ModelConfig as BertConfig  # noqa: F401
from pretrain.models.encoder import EncoderForMaskedLM as BertForMaskedLM  # noqa: F401

"""A Graft model as a `transformers` model: the very modules Graft trains (the graft_*.py files beside this
one), wrapped so that `from_pretrained(dir, trust_remote_code=True)` loads it with no Graft installed.

`forward` takes and returns the Transformer-XL memory: pass `memory=out.memory` of the previous segment to
continue a document (`doc_index` marks documents that begin inside a segment; see graft_memory.py).
"""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_graft import GraftConfig
from .graft_config import ModelConfig
from .graft_encoder import EncoderForMaskedLM
from .graft_memory import Memory, MemoryCache
from .graft_bart import BartForConditionalGeneration
from .graft_t5 import T5ForConditionalGeneration


@dataclass
class GraftOutput(ModelOutput):
    logits: torch.FloatTensor | None = None
    memory: Memory | None = None  # pass to the next segment's forward


class GraftPreTrainedModel(PreTrainedModel):
    config_class = GraftConfig
    base_model_prefix = "model"
    model_classes = {}  # Graft's model class of each family this wrapper loads

    def __init__(self, config: GraftConfig):
        super().__init__(config)
        graft = ModelConfig(**config.graft)
        # Graft ties weights by sharing a Parameter; the export stores each alias too, so every key loads as is.
        self.model = self.model_classes[graft.family](graft)
        self.post_init()

    def _init_weights(self, module):
        pass  # Graft's modules initialize themselves; every weight comes from the checkpoint

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, decoder_input_ids=None,
                decoder_attention_mask=None, memory: Memory | None = None, doc_index=None, **kwargs) -> GraftOutput:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_attention_mask,
                 "doc_index": doc_index}
        cache = MemoryCache(memory) if self.model.config.recurrence.mem_len else None
        out = self.model({k: v for k, v in {**batch, "memory": cache}.items() if v is not None})
        return GraftOutput(logits=out.logits, memory=cache.memory if cache is not None else None)


class GraftForMaskedLM(GraftPreTrainedModel):
    model_classes = {"bert": EncoderForMaskedLM, "roberta": EncoderForMaskedLM, "albert": EncoderForMaskedLM}


class GraftForSeq2SeqLM(GraftPreTrainedModel):
    model_classes = {"t5": T5ForConditionalGeneration, "bart": BartForConditionalGeneration}

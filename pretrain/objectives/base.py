"""What an objective module provides, and what its collator factory is given.

An objective module (one per objective, in this package) defines `OBJECTIVE`, an `Objective`:
- `make_collator(cfg, context)`: the collator (pure: numpy in, tensors out, with a `raw_length`), from the run's
  `ObjectiveConfig` (the module reads its own block of it) and a `CollatorContext`;
- `loss(cfg)`: the loss function `(model, batch) -> scalar or dict of terms with "loss"`, calling the model
  only through its forward (`pretrain.models.output`);
- `needs`: the model capabilities it requires (`ModelConfig.capabilities`); the families it trains follow;
- `heads(cfg, model)` (optional): its pretraining-only heads, name -> module (`pretrain.models.objective_heads`),
  built beside the family's model, trained with it and left out of the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from data_pipeline.errors import UserError
from data_pipeline.shards import Manifest
from pretrain.dataset_copy import dataset_tokenizer


@dataclass
class CollatorContext:
    manifest: Manifest  # the dataset's manifest: special token ids, vocabulary size
    seq_len: int  # the model's sequence length (data.seq_len)
    seed: int  # the run's seed: masking noise for sample i derives from (seed, i)
    dataset: str  # where the dataset's tokenizer.json is (a directory or URL); read only if `tokenizer` is used
    recurrent: bool = False  # the model carries memory across segments: the collator marks documents (doc_index)
    type_vocab_size: int | None = None  # the model's token types (language ids must fit); None: not known (tools)

    @cached_property
    def tokenizer(self):
        """The dataset's `tokenizers.Tokenizer`, checked against the manifest's hash (read on first use)."""
        return dataset_tokenizer(self.dataset, self.manifest)


@dataclass(frozen=True)
class Objective:
    name: str  # objective.name that selects it
    make_collator: Callable[[Any, CollatorContext], Any]  # (ObjectiveConfig, context) -> collator
    loss: Callable[[Any], Callable]  # (ObjectiveConfig) -> ((model, batch) -> loss)
    needs: frozenset[str]  # model capabilities it requires (see ModelConfig.capabilities)
    model_head: str = "mlm"  # the model.head it needs (BERT/ALBERT)
    data: str = "any"  # the dataset it needs: any (format 1 or 2), format 2 (word/sentence starts), parallel
    description: str = ""  # one line for `graft objectives`
    model_settings: tuple = ()  # (model field, value) pairs it needs, e.g. (("query_stream", True),)
    heads: Callable[[Any, Any], dict] | None = None  # (ObjectiveConfig, model) -> pretraining-only heads
    # Its loss reads only the MLM logits: build_objective marks each batch `logits_only`, so BERT, RoBERTa and
    # ALBERT run their last layer only at the labelled positions (pretrain/flops.py counts it so).
    logits_only: bool = False


def require_mask_token(name: str, manifest: Manifest) -> None:
    for role in ("cls", "sep", "mask"):
        if role not in manifest.special_tokens:
            raise UserError(f"objective {name} needs a tokenizer with a mask token; prepare the data with "
                            "--tokenizer-kind wordpiece or bytelevel_bpe")


def require_language_types(name: str, manifest: Manifest, type_vocab_size: int | None) -> None:
    """Language ids go through the token-type embedding: it needs a row per language of the dataset."""
    languages = len(manifest.languages)
    if not languages:
        raise UserError(f"objective {name} needs a dataset that records languages; prepare parallel text with "
                        "`--pair-fields A B --language-fields LANG_A LANG_B` or monolingual text with "
                        "`--language-field LANG`")
    if type_vocab_size is not None and type_vocab_size < languages:
        raise UserError(f"objective {name}: the dataset has {languages} languages ({', '.join(manifest.languages)}) "
                        f"but model.type_vocab_size is {type_vocab_size}; set model.type_vocab_size={languages} "
                        "(or more)")

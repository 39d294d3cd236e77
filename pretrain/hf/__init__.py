"""Key and config maps between Graft's models and `transformers`, one module per family."""

from __future__ import annotations

from types import ModuleType

from pretrain.hf import albert, bart, bert, electra, roberta, t5

FAMILY_MAPS: dict[str, ModuleType] = {"bert": bert, "roberta": roberta, "albert": albert, "electra": electra,
                                      "t5": t5, "bart": bart}

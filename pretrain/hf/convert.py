"""State-dict conversion in both directions through a family's explicit key map.

Tensors are never copied: the results alias the inputs. Unknown keys, missing keys and tied aliases that
disagree are errors naming the key, because a silent mismatch would give a half-random model.
"""

from __future__ import annotations

import re

import torch

from pretrain.hf import FAMILY_MAPS
from pretrain.hf.common import HFPart
from pretrain.models.config import ModelConfig


def parts(cfg: ModelConfig) -> list[HFPart]:
    return FAMILY_MAPS[cfg.family].parts(cfg)


def graft_tied(cfg: ModelConfig) -> dict[str, str]:
    """Graft alias -> source key (the same tensor; listed by state_dict(), stored once in checkpoints)."""
    return FAMILY_MAPS[cfg.family].GRAFT_TIED


def graft_keys(cfg: ModelConfig) -> list[str]:
    """Every distinct Graft tensor the export writes, in first-use order."""
    return list(dict.fromkeys(k for part in parts(cfg) for k in part.keys))


def to_hf(state_dict: dict, cfg: ModelConfig) -> list[tuple[HFPart, dict]]:
    """Graft state dict -> one HF state dict per part (tied HF aliases omitted: transformers re-ties them)."""
    the_parts = parts(cfg)
    tied = graft_tied(cfg)
    known = set(graft_keys(cfg))
    unknown = [k for k in state_dict if k not in known and k not in tied]
    if unknown:
        raise KeyError(f"unknown Graft {cfg.family} key {unknown[0]!r}")
    missing = [k for k in known if k not in state_dict]
    if missing:
        raise KeyError(f"Graft {cfg.family} state dict is missing {', '.join(missing)}")
    _check_tied(state_dict, tied, "Graft")
    return [(part, {h: state_dict[g] for g, h in part.keys.items()}) for part in the_parts]


def from_hf(state_dicts: list[dict | None], cfg: ModelConfig) -> tuple[dict, list[str]]:
    """HF state dicts (one per part; None for a part not given) -> (Graft state dict, fresh Graft keys).

    Base-model checkpoints (saved without the base prefix and head, e.g. a `BertModel`) are accepted: the
    keys of the pretraining head are then returned as "fresh" for the caller to initialize and report.
    """
    out: dict[str, torch.Tensor] = {}
    fresh: list[str] = []
    for part, sd in zip(parts(cfg), state_dicts, strict=True):
        if sd is None:
            fresh += [g for g in part.keys if g not in out]
            continue
        sd = _with_base_prefix(sd, part)
        ignored = re.compile(part.hf_ignored)
        _check_tied(sd, part.hf_tied, "Hugging Face")
        wanted = set(part.keys.values())
        unknown = [k for k in sd if k not in wanted and k not in part.hf_tied and not ignored.fullmatch(k)]
        if unknown:
            raise KeyError(f"unknown Hugging Face {part.architecture} key {unknown[0]!r}")
        for g, h in part.keys.items():
            if h in sd:
                if g in out and not _equal(out[g], sd[h]):
                    raise ValueError(f"{h} of the {part.architecture} differs from the same tensor of the "
                                     f"{parts(cfg)[0].architecture}; Graft's {cfg.family} shares it between them")
                out.setdefault(g, sd[h])
            elif any(h.startswith(p) for p in part.head):
                fresh.append(g)
            else:
                raise KeyError(f"Hugging Face {part.architecture} state dict is missing {h}")
    fresh = [g for g in dict.fromkeys(fresh) if g not in out]
    for alias, source in graft_tied(cfg).items():
        if source in out:
            out[alias] = out[source]
    return out, fresh


def _with_base_prefix(sd: dict, part: HFPart) -> dict:
    """A base model (`BertModel`) is saved without its prefix ("bert."): add it back."""
    if not part.base_prefix or any(k.startswith(part.base_prefix) for k in sd):
        return sd
    return {part.base_prefix + k: v for k, v in sd.items()}


def _check_tied(sd: dict, tied: dict, side: str) -> None:
    for alias, source in tied.items():
        if alias in sd and source in sd and not _equal(sd[alias], sd[source]):
            raise ValueError(f"{side} {alias} differs from {source}; the model ties them")


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal, without reading the data when both are the very same view of one storage (a tied weight
    in a state dict: two tensor objects, one memory)."""
    same_view = a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() \
        and a.data_ptr() == b.data_ptr()
    return a is b or same_view or torch.equal(a, b)

"""Transformer-XL segment memory: what a recurrent stack keeps of earlier segments, and its masks.

Each layer's memory is the hidden states that entered that layer in the previous segments (the last
`mem_len` positions, detached: no gradient crosses a segment). `valid` marks the memory positions a query
may attend: padding never is, and neither is a document that ended. Documents are told apart by the
collator's `doc_index` [B, T]: the number of documents that began in this segment at or before a position,
so 0 marks the document still open from the previous segment. A query may attend memory only with
`doc_index == 0`, and only memory of the document open at the memory's end.

`MemoryCache` is the object a batch carries under "memory" (like a KV cache): the model reads the memory
from it and writes the next one back, so the loss functions need not know about recurrence.
`stack_with_memory` is how every recurrent stack (the encoder families', T5's and BART's encoders) runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrain.models.attention import with_bias


@dataclass
class Memory:
    layers: list[torch.Tensor]  # per layer application: [B, M, H] hidden states that entered it
    valid: torch.Tensor  # bool [B, M]: attendable (not padding, of the document still open)

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    @classmethod
    def empty(cls, depth: int, batch: int, hidden: int, dtype=torch.float32, device=None) -> "Memory":
        return cls([torch.zeros(batch, 0, hidden, dtype=dtype, device=device) for _ in range(depth)],
                   torch.zeros(batch, 0, dtype=torch.bool, device=device))


class MemoryCache:
    """Holds one rank's memory between micro-batches; the model reads `memory` and sets it after a forward."""

    def __init__(self, memory: Memory | None = None):
        self.memory = memory


def memory_mask(memory: Memory, doc_index: torch.Tensor | None, attention_mask: torch.Tensor | None,
                length: int) -> torch.Tensor | None:
    """bool [B, 1, T, M + T]: queries see valid memory (if they continue its document) and every
    non-padded position of their segment. None when nothing is masked (SDPA's fast path)."""
    batch, m = memory.valid.shape
    continues = torch.ones(batch, length, dtype=torch.bool, device=memory.valid.device) if doc_index is None \
        else doc_index == 0
    sees_memory = continues[:, :, None] & memory.valid[:, None, :]  # [B, T, M]
    current = torch.ones(batch, length, dtype=torch.bool, device=memory.valid.device) if attention_mask is None \
        else attention_mask.bool()
    mask = torch.cat([sees_memory, current[:, None, :].expand(batch, length, length)], dim=2)
    return None if bool(mask.all()) else mask[:, None]


def next_memory(memory: Memory, entered: list[torch.Tensor], doc_index: torch.Tensor | None,
                attention_mask: torch.Tensor | None, mem_len: int) -> Memory:
    """Append this segment to the memory and keep the last `mem_len` positions, detached."""
    batch, length = entered[0].shape[:2]
    device = memory.valid.device
    if doc_index is None:
        still_open = torch.ones(batch, length, dtype=torch.bool, device=device)
        kept = memory.valid
    else:  # only the document open at the segment's end carries on; a row with a new document drops the old
        last = doc_index.max(dim=1, keepdim=True).values
        still_open = doc_index == last
        kept = memory.valid & (last == 0)
    if attention_mask is not None:
        still_open = still_open & attention_mask.bool()
    valid = torch.cat([kept, still_open], dim=1)[:, -mem_len:]
    layers = [torch.cat([old, new], dim=1)[:, -mem_len:].detach()
              for old, new in zip(memory.layers, entered, strict=True)]
    return Memory(layers, valid)



def stack_with_memory(stack, positions, x: torch.Tensor, attention_mask: torch.Tensor | None,
                      cache: MemoryCache | None, doc_index: torch.Tensor | None, mem_len: int) -> torch.Tensor:
    """Run a `LayerStack` over this segment `x` [B, T, H] and the memory in `cache` (none yet: empty), with the
    position scheme `positions` told the true offsets (the memory's keys precede the segment's queries by its
    length); with `mem_len` > 0 the cache receives the next memory. Returns the stack's last hidden states."""
    batch, length, hidden = x.shape
    memory = cache.memory if cache is not None else None
    if memory is None:
        memory = Memory.empty(stack.depth, batch, hidden, x.dtype, x.device)
    m = memory.length
    mask = with_bias(memory_mask(memory, doc_index, attention_mask, length),
                     positions.attention_bias(length, m + length, query_offset=m), x.dtype)
    score = positions.attention_score(length, m + length, query_offset=m)
    recurrent = cache is not None and mem_len > 0
    out = stack(x, states=memory.layers if m else None, keep_states=recurrent, mask=mask, score=score)
    if recurrent:
        cache.memory = next_memory(memory, out.states, doc_index, attention_mask, mem_len)
    return out.hidden

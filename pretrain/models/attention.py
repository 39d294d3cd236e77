"""Multi-head attention over SDPA, and the masks it takes.

Masks are broadcastable to [B, heads, T, S] (S: the keys, memory included): bool (True = attend) or an
additive float mask. A padding mask is [B, 1, 1, S], a causal one [1, 1, T, T], a per-sample one (prefix LM,
UniLM, XLNet's permutations) [B, 1, T, S]; any of them reaches SDPA unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.positions import ScoreTerm


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/output projections (one key per HF weight).

    Self-attention over `x`, or over `[memory; x]` when given a memory (hidden states of earlier segments,
    [B, M, H], which get no gradient); cross-attention over `context` otherwise. `score`, a position
    scheme's content-dependent term (see `pretrain.models.positions`), is added to the scaled scores.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, head_dim: int | None = None,
                 bias: bool = True, scale: float | None = None):
        super().__init__()
        head_dim = head_dim or hidden_size // num_heads
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout, self.scale = num_heads, head_dim, dropout, scale
        self.query = nn.Linear(hidden_size, inner, bias=bias)
        self.key = nn.Linear(hidden_size, inner, bias=bias)
        self.value = nn.Linear(hidden_size, inner, bias=bias)
        self.output = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, score: ScoreTerm | None = None) -> torch.Tensor:
        """x: [B, T, H] -> [B, T, H]; mask broadcastable to [B, heads, T, S], S = M + T with a memory."""
        assert memory is None or context is None, "a memory extends self-attention only"
        kv = x if context is None else context
        if memory is not None:
            kv = torch.cat([memory.detach(), x], dim=1)

        def heads(proj: nn.Linear, src: torch.Tensor) -> torch.Tensor:
            return proj(src).view(src.shape[0], src.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query, x), heads(self.key, kv), heads(self.value, kv)
        if score is not None:
            term = score(q, k)
            mask = term if mask is None else term + (additive(mask, term.dtype) if mask.dtype == torch.bool else mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0, scale=self.scale)
        return self.output(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] (1 = token, 0 = padding) -> bool [B, 1, 1, S], or None when nothing is padded; a per-sample
    [B, T, S] mask (UniLM's, True = may attend) -> [B, 1, T, S].

    No mask lets SDPA pick its fastest kernel; the all() check costs one host sync.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    if attention_mask.dim() == 3:
        return attention_mask[:, None].bool()
    return attention_mask[:, None, None, :].bool()


def causal_mask(length: int, attention_mask: torch.Tensor | None, device, memory_length: int = 0) -> torch.Tensor:
    """bool [B or 1, 1, T, M + T]: each position sees the M memory positions, itself and earlier non-padded
    positions. `attention_mask` [B, T] marks this segment's padding (the memory's is never padded)."""
    mask = torch.ones(length, length + memory_length, dtype=torch.bool, device=device).tril(memory_length)[None, None]
    if attention_mask is not None:
        if memory_length:
            attention_mask = F.pad(attention_mask, (memory_length, 0), value=1)
        mask = mask & attention_mask[:, None, None, :].bool()
    return mask


def additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """bool mask -> additive float mask (0 where attended, the dtype's minimum elsewhere), as transformers."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def with_bias(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A position scheme's content-free bias folded into the mask once per forward (shared by every layer)."""
    if bias is None:
        return mask
    bias = bias.to(dtype)
    if mask is None:
        return bias
    return bias + (additive(mask, dtype) if mask.dtype == torch.bool else mask)

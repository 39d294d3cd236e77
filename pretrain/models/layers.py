"""Layers shared by Graft's encoder and encoder-decoder models.

Every family is assembled from these; a family differs only in its choices (norm kind and placement,
activation, biases, position scheme), so one attention and one feed-forward serve BERT, T5 and BART.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS = {
    "gelu": F.gelu,  # exact (erf), as BERT and BART
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # the tanh approximation, as ALBERT and T5
    "relu": F.relu,
}


class RMSNorm(nn.Module):
    """T5's norm: scale only, no mean subtraction or bias; the variance is taken in fp32 (bf16-safe)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(self.weight.dtype)


def make_norm(kind: str, size: int, eps: float) -> nn.Module:
    return RMSNorm(size, eps) if kind == "rms" else nn.LayerNorm(size, eps=eps)


class Attention(nn.Module):
    """Multi-head attention over SDPA with separate q/k/v/output projections (one key per HF weight).

    Self-attention when `context` is None, cross-attention over `context` otherwise.
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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, H]; mask broadcastable to [B, heads, T, S]: bool (True = attend) or additive float."""
        kv = x if context is None else context

        def heads(proj: nn.Linear, src: torch.Tensor) -> torch.Tensor:
            return proj(src).view(src.shape[0], src.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.query, x), heads(self.key, kv), heads(self.value, kv), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0, scale=self.scale,
        )
        return self.output(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class FeedForward(nn.Module):
    """up -> activation -> dense down; gated (T5 v1.1): act(gate(x)) * up(x) -> dropout -> down."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "gelu", gated: bool = False,
                 bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.gate = nn.Linear(hidden_size, intermediate_size, bias=bias) if gated else None
        self.up = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.gate(x)) * self.up(x) if self.gate is not None else self.act(self.up(x))
        return self.down(self.dropout(h))


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each sublayer residual with its own norm.

    post-LN (BERT, BART): x = norm(x + dropout(sublayer(x))); pre-LN (T5): x = x + dropout(sublayer(norm(x))).
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, hidden_dropout: float,
                 attention_dropout: float, norm_eps: float, *, pre_ln: bool = False, norm: str = "layer",
                 activation: str = "gelu", gated: bool = False, bias: bool = True, head_dim: int | None = None,
                 attention_scale: float | None = None, cross_attention: bool = False, ffn_dropout: float = 0.0):
        super().__init__()
        attn = lambda: Attention(hidden_size, num_heads, attention_dropout, head_dim, bias, attention_scale)  # noqa: E731
        self.pre_ln = pre_ln
        self.attn = attn()
        self.attn_norm = make_norm(norm, hidden_size, norm_eps)
        self.cross_attn = attn() if cross_attention else None
        self.cross_norm = make_norm(norm, hidden_size, norm_eps) if cross_attention else None
        self.ffn = FeedForward(hidden_size, intermediate_size, activation, gated, bias, ffn_dropout)
        self.ffn_norm = make_norm(norm, hidden_size, norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def _residual(self, x, norm, fn):
        if self.pre_ln:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, mask))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn(h, context_mask, context))
        return self._residual(x, self.ffn_norm, self.ffn)


class LayerStack(nn.Module):
    """Runs `depth` layers: distinct ones, or ALBERT-style one shared layer applied `depth` times.

    LayerDrop skips whole layers in training. Which ones is a pure function of the run's seed and the optimizer
    step being trained, which the trainer sets through `set_layerdrop_step`: every micro-batch of a step, on
    every rank, skips the same layers (ZeRO-3's per-layer parameter gathers stay in step across ranks), and
    since the step is checkpointed, a resumed run, at any world size, draws what an uninterrupted one would.
    """

    def __init__(self, make_layer, depth: int, share: bool = False, layerdrop: float = 0.0,
                 checkpointing: bool = False):
        super().__init__()
        self.depth, self.layerdrop, self.checkpointing = depth, layerdrop, checkpointing
        self.layers = nn.ModuleList(make_layer() for _ in range(1 if share else depth))
        # The run's seed, the optimizer step being trained and this stack's place among the model's stacks
        # (an encoder and a decoder of the same depth draw differently), set by `set_layerdrop_step`.
        self.seed, self.step, self.stack = 0, 0, 0

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        keep = self._kept_layers() if self.training and self.layerdrop > 0 else None
        for i in range(self.depth):
            if keep is not None and not keep[i]:
                continue
            layer = self.layers[i % len(self.layers)]
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, *args, use_reentrant=False)
            else:
                x = layer(x, *args)
        return x

    def _kept_layers(self) -> torch.Tensor:
        # A generator of its own, seeded from (seed, step, stack) alone: no state to carry, and the global torch
        # RNG (dropout, which differs between ranks) is left untouched. Hashed, because torch's CPU generator
        # keeps only the low 32 bits of a seed.
        key = hashlib.sha256(f"layerdrop {self.seed} {self.step} {self.stack}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
        return torch.rand(self.depth, generator=generator) >= self.layerdrop


def set_layerdrop_step(model: nn.Module, seed: int, step: int) -> None:
    """Make LayerDrop draw for optimizer step `step` of a run seeded `seed` (the trainer calls this before each
    step)."""
    stacks = [module for module in model.modules() if isinstance(module, LayerStack)]
    for index, stack in enumerate(stacks):
        stack.seed, stack.step, stack.stack = seed, step, index


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] (1 = token, 0 = padding) -> bool [B, 1, 1, S], or None when nothing is padded.

    No mask lets SDPA pick its fastest kernel; the all() check costs one host sync.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def causal_mask(length: int, attention_mask: torch.Tensor | None, device) -> torch.Tensor:
    """bool [B or 1, 1, T, T]: each position sees itself and earlier non-padded positions."""
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].bool()
    return mask


def additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """bool mask -> additive float mask (0 where attended, the dtype's minimum elsewhere), as transformers."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias: [1, heads, T, S] added to the attention scores."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, bidirectional: bool):
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.bias = nn.Embedding(num_buckets, num_heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        num_buckets, buckets = self.num_buckets, 0
        if self.bidirectional:
            num_buckets //= 2
            buckets = (relative > 0).long() * num_buckets
            relative = relative.abs()
        else:
            relative = -torch.clamp(relative, max=0)
        exact = num_buckets // 2  # half the buckets are single offsets, the rest grow logarithmically
        large = exact + (torch.log(relative.float() / exact) / math.log(self.max_distance / exact)
                         * (num_buckets - exact)).long()
        large = torch.clamp(large, max=num_buckets - 1)
        return buckets + torch.where(relative < exact, relative, large)

    def forward(self, query_len: int, key_len: int) -> torch.Tensor:
        device = self.bias.weight.device
        relative = torch.arange(key_len, device=device)[None, :] - torch.arange(query_len, device=device)[:, None]
        return self.bias(self.bucket(relative)).permute(2, 0, 1)[None]

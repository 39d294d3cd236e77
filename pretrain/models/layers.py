"""Layers shared by Graft's encoder and encoder-decoder models.

Every family is assembled from these; a family differs only in its choices (norm kind and placement,
activation, biases, position scheme), so one attention and one feed-forward serve BERT, T5 and BART.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pretrain.models.attention import Attention
from pretrain.models.positions import ScoreTerm

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


def position_index(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [B, T] -> (index [B, P], kept bool [B, P]): each row's True positions in order, padded with others
    to the longest row's count P (0 when none is True); at_positions(x, index)[kept] lists the rows of
    x[positions], in the same order."""
    counts = positions.sum(1)
    width = int(counts.max()) if positions.numel() else 0
    index = torch.argsort((~positions).to(torch.int8), dim=1, stable=True)[:, :width]
    kept = torch.arange(width, device=positions.device) < counts[:, None]
    return index, kept


def at_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, T, H] at `index` [B, P] (position_index's): [B, P, H]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


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

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                state: torch.Tensor | None = None, score: ScoreTerm | None = None,
                query_mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`state`: this layer's memory [B, M, H] (hidden states of earlier segments at this depth), attended
        to with x and normalized as x is (pre-LN); `score`: a position scheme's per-layer term.

        `x` a pair (content h, query g), XLNet's two streams: h attends to h under `mask`; g attends to h
        (not to itself) under `query_mask`, through the same weights; both go through the same feed-forward."""
        if isinstance(x, tuple):
            return self._two_streams(*x, mask, query_mask, score)
        memory = self.attn_norm(state) if state is not None and self.pre_ln else state
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, mask, memory=memory, score=score))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn(h, context_mask, context))
        return self._residual(x, self.ffn_norm, self.ffn)

    def at(self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """forward(x) at the positions `index` [B, P] only: [B, P, H]. Each of those queries still attends to every
        position of x, but the other positions' queries, output projections and feed-forward are never computed
        (a last layer whose output only the MLM head reads, at the masked positions)."""
        assert self.cross_attn is None, "a layer at positions is an encoder layer"
        queries = at_positions(x, index)
        if mask is not None and mask.shape[-2] > 1:  # a mask per query (UniLM's [B, 1, T, S]): the positions' rows
            mask = mask.gather(-2, index[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[-1]))
        keys = self.attn_norm(x) if self.pre_ln else x  # what forward's own attention reads
        queries = self._residual(queries, self.attn_norm, lambda q: self.attn(q, mask, context=keys))
        return self._residual(queries, self.ffn_norm, self.ffn)

    def _two_streams(self, h, g, mask, query_mask, score):
        assert self.cross_attn is None, "two streams exist for encoders only"
        keys = self.attn_norm(h) if self.pre_ln else h  # the content the query stream reads, as h's own attention
        g = self._residual(g, self.attn_norm, lambda q: self.attn(q, query_mask, context=keys, score=score))
        h = self._residual(h, self.attn_norm, lambda q: self.attn(q, mask, score=score))
        return self._residual(h, self.ffn_norm, self.ffn), self._residual(g, self.ffn_norm, self.ffn)


@dataclass
class StackOutput:
    hidden: torch.Tensor  # the last layer's output [B, T, H]
    # With keep_states: one entry per layer application (depth of them, also when layers are shared or
    # dropped): the hidden states that entered it, from which a recurrent model makes that layer's next memory.
    states: list[torch.Tensor] | None = None


class LayerStack(nn.Module):
    """Runs `depth` layers: distinct ones, or ALBERT-style one shared layer applied `depth` times, with
    per-layer state in (`states`) and out (`StackOutput.states`).

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

    def forward(self, x: torch.Tensor, states: list | None = None, keep_states: bool = False,
                at: torch.Tensor | None = None, **inputs) -> StackOutput:
        """Each layer gets `inputs` (keywords: mask, context, score, ...) and its own entry of `states` (one
        per layer application, e.g. a memory; None: no state). `x` may be a tuple of tensors that layers
        carry together (a second attention stream); the stack only passes it on. `at` [B, P]: the last layer
        runs only at those positions (`TransformerLayer.at`; inputs: mask alone), and the output is [B, P, H]."""
        assert states is None or len(states) == self.depth
        assert at is None or (states is None and set(inputs) <= {"mask"}), "a stack at positions has no state"
        keep = self._kept_layers() if self.training and self.layerdrop > 0 else None
        entered = [] if keep_states else None
        for i in range(self.depth):
            if keep_states:
                entered.append(x)  # a dropped layer's input is also its output: the same state either way
            if keep is not None and not keep[i]:
                continue
            layer = self.layers[i % len(self.layers)]
            kwargs = inputs if states is None or states[i] is None else {**inputs, "state": states[i]}
            if at is not None and i == self.depth - 1:
                layer, kwargs = layer.at, {**kwargs, "index": at}
            if self.checkpointing and self.training:
                x = checkpoint(layer, x, use_reentrant=False, **kwargs)
            else:
                x = layer(x, **kwargs)
        if at is not None and keep is not None and not keep[-1]:  # LayerDrop skipped the last layer
            x = at_positions(x, at)
        return StackOutput(x, entered)

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

"""Position schemes: how a model learns where its tokens are, given their absolute offsets.

A scheme is an `nn.Module` with up to three hooks, each told the true positions of queries and keys (the
first query's position is `query_offset`; the first key's is `key_offset`, which is earlier than the
query's by the memory's length when attention has a memory of earlier segments):

- `embedding(input_ids, offset)`: a term added to the token embeddings (absolute schemes: BERT, BART);
- `attention_bias(query_len, key_len, query_offset, key_offset)`: a content-free additive bias
  [1, heads, T, S] on the attention scores, the same in every layer, so the stack folds it into the mask
  once per forward (T5's buckets);
- `attention_score(query_len, key_len, query_offset, key_offset)`: a content-dependent term, a callable
  `(q, k) -> [B, heads, T, S]` (already scaled) that every layer's attention calls on its own queries and
  keys (q [B, heads, T, d], k [B, heads, S, d]).

Where positions are not contiguous from one offset (MASS's decoder, which sits at its fragment's place in
the encoder's text), `AbsolutePositions.at` and `T5Buckets.bias_at` take explicit position ids [B, T].

Each hook returns None where the scheme has no such term (`PositionScheme`'s defaults), so the attention
takes SDPA's fast path whenever neither a mask nor a term is present.

Adding Transformer-XL's relative encoding is one new subclass, with no change to the attention:
`attention_score` builds the sinusoidal embeddings R of the relative distances
`(query_offset + i) - (key_offset + j)` (both signs: an encoder's queries see keys on either side) once per
forward, projects them per layer (or shares the projection), and returns `lambda q, k: scale * ((u . k) +
((q + v) . R))` with the content bias u and the position bias v (parameters [heads, d], shared by all
layers); the first term of XL's score, q . k, is SDPA's own. A stack owning the scheme passes that callable
as `score` to each layer, and the memory as each layer's `state`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

# (q [B, heads, T, d], k [B, heads, S, d]) -> additive scores [B or 1, heads, T, S]
ScoreTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PositionScheme(nn.Module):
    """No position information; subclasses override the hooks they use (see the module docstring)."""

    def embedding(self, input_ids: torch.Tensor, offset: int = 0) -> torch.Tensor | None:
        return None

    def attention_bias(self, query_len: int, key_len: int, query_offset: int = 0,
                       key_offset: int = 0) -> torch.Tensor | None:
        return None

    def attention_score(self, query_len: int, key_len: int, query_offset: int = 0,
                        key_offset: int = 0) -> ScoreTerm | None:
        return None


class AbsolutePositions(PositionScheme, nn.Embedding):
    """Learned absolute position embeddings (BERT, RoBERTa, ALBERT, ELECTRA, BART), an `nn.Embedding` so that
    its weight keeps the name checkpoints and key maps use.

    Token t of a segment starting at `offset` sits at position `start + offset + t` (BART's learned positions
    start at 2). With `after_padding` (RoBERTa) padding tokens sit at the padding index and the others count
    up from just after it, as transformers does.
    """

    def __init__(self, num_positions: int, size: int, start: int = 0, padding_idx: int | None = None,
                 after_padding: bool = False):
        super().__init__(num_positions, size, padding_idx=padding_idx)
        assert not after_padding or padding_idx is not None
        self.start, self.after_padding = start, after_padding

    def ids(self, input_ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Position ids: [T] (the same for every row), or [B, T] with `after_padding`."""
        if self.after_padding:
            not_pad = (input_ids != self.padding_idx).long()
            return (torch.cumsum(not_pad, dim=1) + offset) * not_pad + self.padding_idx
        first = self.start + offset
        return torch.arange(first, first + input_ids.shape[1], device=input_ids.device)

    def embedding(self, input_ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """[T, size] or [B, T, size], to add to the token embeddings."""
        ids = self.ids(input_ids, offset)
        # RoBERTa's largest id depends on the padding (one host sync, as before); the others' is known.
        last = int(ids.max()) if self.after_padding else self.start + offset + input_ids.shape[1] - 1
        if last >= self.num_embeddings:
            raise ValueError(f"sequence length {input_ids.shape[1] + offset} exceeds model.max_position_embeddings "
                             f"({self.num_embeddings - self.start})")
        return self(ids)

    def at(self, position_ids: torch.Tensor) -> torch.Tensor:
        """[B, T, size] for explicit positions [B, T] (0 = the first token; `start` is added here)."""
        if int(position_ids.max()) + self.start >= self.num_embeddings or int(position_ids.min()) < 0:
            raise ValueError(f"position ids must be in [0, {self.num_embeddings - self.start}) "
                             f"(model.max_position_embeddings), got {int(position_ids.min())}.."
                             f"{int(position_ids.max())}")
        return self(position_ids + self.start)


class T5Buckets(PositionScheme):
    """T5's bucketed relative position bias: one learned scalar per head and bucket of key - query distance;
    exact for small distances, logarithmic up to `max_distance`. The decoder's (unidirectional) buckets count
    only keys at or before the query."""

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

    def attention_bias(self, query_len: int, key_len: int, query_offset: int = 0,
                       key_offset: int = 0) -> torch.Tensor:
        """[1, heads, T, S] for queries at query_offset.. and keys at key_offset.."""
        device = self.bias.weight.device
        keys = torch.arange(key_offset, key_offset + key_len, device=device)
        queries = torch.arange(query_offset, query_offset + query_len, device=device)
        return self.bias_at(queries[None], keys[None])

    def bias_at(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """[B, heads, T, S] for queries and keys at explicit positions ([B, T] and [B, S])."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        return self.bias(self.bucket(relative)).permute(0, 3, 1, 2)


class XLRelative(PositionScheme):
    """Transformer-XL's relative positions (Dai et al. 2019, section 3.3), bidirectional as XLNet's `bi`
    attention: the score of query i and key j adds  u . k_j + (q_i + v) . W_r R(d)  to  q_i . k_j, where
    d = (query_offset + i) - (key_offset + j) runs both ways, R is the sinusoidal encoding of d (clamped to
    +-clamp_len when clamp_len > 0), and u, v ([heads, head_dim]) are the content and position biases.

    u, v and the projection W_r are shared by all layers (the scheme is owned by the stack), so the projected
    encodings are computed once per forward; the q . k term is SDPA's own.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int, clamp_len: int = 0):
        super().__init__()
        self.hidden_size, self.num_heads, self.head_dim, self.clamp_len = hidden_size, num_heads, head_dim, clamp_len
        self.projection = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.position_bias = nn.Parameter(torch.zeros(num_heads, head_dim))

    def encodings(self, distances: torch.Tensor) -> torch.Tensor:
        """[P] distances -> [P, hidden] sinusoids (sin and cos halves, as Transformer-XL)."""
        if self.clamp_len:
            distances = distances.clamp(-self.clamp_len, self.clamp_len)
        # Computed here, not kept as a buffer: nothing to load, nothing left on the meta device
        inv_freq = 1.0 / 10000 ** (torch.arange(0, self.hidden_size, 2.0, device=distances.device) / self.hidden_size)
        angles = distances.float()[:, None] * inv_freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def attention_score(self, query_len: int, key_len: int, query_offset: int = 0,
                        key_offset: int = 0) -> ScoreTerm:
        device = self.projection.weight.device
        nearest = query_offset - (key_offset + key_len - 1)  # the smallest distance: first query, last key
        distances = torch.arange(nearest, nearest + query_len + key_len - 1, device=device)
        r = self.projection(self.encodings(distances).to(self.projection.weight.dtype))
        r = r.view(-1, self.num_heads, self.head_dim).transpose(0, 1)  # [heads, P, d]
        # Query i and key j are at distance index (i - j) + key_len - 1 into `distances`.
        index = (torch.arange(query_len, device=device)[:, None] - torch.arange(key_len, device=device)[None, :]
                 + key_len - 1)
        scale = self.head_dim ** -0.5
        u, v = self.content_bias[None, :, None, :], self.position_bias[None, :, None, :]

        def score(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            content = (u * k).sum(-1)[:, :, None, :]  # [B, heads, 1, S]
            by_distance = torch.matmul(q + v, r.transpose(-1, -2).to(q.dtype))  # [B, heads, T, P]
            position = torch.gather(by_distance, -1, index.expand(*by_distance.shape[:2], -1, -1))
            return scale * (content + position)
        return score

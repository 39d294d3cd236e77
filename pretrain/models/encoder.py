"""BERT, RoBERTa and ALBERT: one encoder with a masked-LM head (and optionally the NSP/SOP head).

Configured as the standard model, each is architecturally identical to its `transformers` class
(`BertForMaskedLM`/`BertForPreTraining`, `RobertaForMaskedLM`, `AlbertForMaskedLM`/`AlbertForPreTraining`),
so conversion is the key map in `pretrain.hf`. The families differ only in position ids (RoBERTa counts from
the padding index), factorized embeddings and layer sharing (ALBERT), and the head's activation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.attention import padding_mask
from pretrain.models.output import ModelOutput
from pretrain.models.layers import ACTIVATIONS, LayerStack, TransformerLayer, make_norm, position_index
from pretrain.models.memory import MemoryCache, stack_with_memory
from pretrain.models.objective_heads import ATTRIBUTE as HEADS, head_outputs
from pretrain.models.positions import AbsolutePositions, XLRelative


class Embeddings(nn.Module):
    """word + token type (+ absolute position) embeddings -> LayerNorm -> dropout, at `embed_size`. With
    relative positions (model.positions=xl) the attention knows positions and the embeddings do not."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        size = cfg.embed_size
        # padding_idx as in transformers: the pad row starts at zero and gets no gradient from the lookup
        self.word = nn.Embedding(cfg.vocab_size, size, padding_idx=cfg.pad_token_id)
        roberta = cfg.family == "roberta"  # RoBERTa: positions count from after the padding index
        self.position = AbsolutePositions(cfg.max_position_embeddings, size,
                                          padding_idx=cfg.pad_token_id if roberta else None, after_padding=roberta) \
            if cfg.positions == "absolute" else None
        self.token_type = nn.Embedding(cfg.type_vocab_size, size)
        self.norm = nn.LayerNorm(size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        # XLNet's query stream starts from one learned vector in place of every token (model.query_stream:
        # pretraining only, never exported; see QUERY_STREAM_KEY)
        self.query_stream = nn.Parameter(torch.empty(size)) if cfg.query_stream else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, offset: int = 0,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`offset`: the absolute position of the first token (a later segment of a longer text); `position_ids`
        [B, T]: explicit positions instead (TLM's restart at each side)."""
        return self._embed(self.word(input_ids), input_ids, token_type_ids, offset, position_ids)

    def query(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, offset: int = 0,
              position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The query stream's input: the learned vector + each token's position (and segment), never its token."""
        assert self.query_stream is not None, "the query stream needs model.query_stream=true"
        vector = self.query_stream.expand(*input_ids.shape, -1)
        return self._embed(vector, input_ids, token_type_ids, offset, position_ids)

    def _embed(self, x, input_ids, token_type_ids, offset, position_ids):
        # token type 0 everywhere when not given, as transformers does; sums in transformers' order
        token_type = self.token_type(token_type_ids) if token_type_ids is not None else self.token_type.weight[0]
        x = x + token_type
        if self.position is not None:
            explicit = position_ids is not None
            x = x + (self.position(position_ids) if explicit else self.position.embedding(input_ids, offset))
        return self.dropout(self.norm(x))


class Encoder(nn.Module):
    """Optional embedding projection (ALBERT, ELECTRA) -> the layer stack (-> final norm when pre-LN)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.project = nn.Linear(cfg.embed_size, cfg.hidden_size) if cfg.embed_size != cfg.hidden_size else None
        self.stack = LayerStack(
            lambda: TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout,
                                     cfg.attention_dropout, cfg.layer_norm_eps, pre_ln=cfg.pre_ln,
                                     activation=cfg.hidden_act),
            cfg.num_layers, share=cfg.share_layers, layerdrop=cfg.layerdrop,
            checkpointing=cfg.activation_checkpointing)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.pre_ln else None
        head_dim = cfg.hidden_size // cfg.num_heads
        self.relative = XLRelative(cfg.hidden_size, cfg.num_heads, head_dim, cfg.recurrence.clamp_len) \
            if cfg.positions == "xl" else None
        self.mem_len = cfg.recurrence.mem_len

    def two_streams(self, h: torch.Tensor, g: torch.Tensor, mask: torch.Tensor,
                    query_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """XLNet's content stream h and query stream g ([B, T, E] each) through the stack as a pair, under their
        bool masks [B, 1, T, T] (True = may attend); relative positions score both streams (no memory)."""
        if self.project is not None:
            h, g = self.project(h), self.project(g)
        length = h.shape[1]
        score = self.relative.attention_score(length, length) if self.relative is not None else None
        h, g = self.stack((h, g), mask=mask, query_mask=query_mask, score=score).hidden
        if self.final_norm is not None:
            h, g = self.final_norm(h), self.final_norm(g)
        return h, g

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: MemoryCache | None = None,
                doc_index: torch.Tensor | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        """With relative positions, `cache` (if given) holds the memory of earlier segments and receives the
        next one; `doc_index` [B, T] tells which positions continue the memory's document (see `memory`).
        `at` [B, P] (absolute positions only): the hidden states at those positions alone, [B, P, H]."""
        if self.project is not None:
            x = self.project(x)
        if self.relative is None:
            x = self.stack(x, mask=padding_mask(attention_mask), at=at).hidden
        else:
            assert at is None, "relative positions score every query: no last layer at positions"
            x = stack_with_memory(self.stack, self.relative, x, attention_mask, cache, doc_index, self.mem_len)
        return self.final_norm(x) if self.final_norm is not None else x


def last_layer_at_positions(cfg: ModelConfig) -> bool:
    """Whether the model of `cfg` runs its last layer only at the MLM positions for a batch with `logits_only`
    (`EncoderForMaskedLM.forward`; pretrain/flops.py counts it so): BERT, RoBERTa and ALBERT with absolute
    positions (relative ones score every query with the memory) and no NSP/SOP head (which reads [CLS])."""
    return cfg.family in ("bert", "roberta", "albert") and cfg.positions == "absolute" and cfg.head == "mlm"


class MLMHead(nn.Module):
    """dense (hidden -> embed) -> activation -> LayerNorm -> decoder (tied to the word embedding) + bias."""

    def __init__(self, cfg: ModelConfig, word_embedding: nn.Embedding, activation: str):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.dense = nn.Linear(cfg.hidden_size, cfg.embed_size)
        self.norm = make_norm("layer", cfg.embed_size, cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.embed_size, cfg.vocab_size, bias=False)
        self.decoder.weight = word_embedding.weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias


class PairHead(nn.Module):
    """Pooler (dense + tanh on the first token) -> 2-way classifier: BERT's NSP, ALBERT's SOP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))


def init_weights(module: nn.Module, std: float, skip: tuple = ()) -> None:
    """BERT's initialization (transformers' `_init_weights`), applied to every submodule.

    Through `Module.apply`, each submodule initializing only its own parameters: under
    `deepspeed.zero.Init` (ZeRO-3), apply gathers one submodule's partitioned parameters at a time. A model
    built on the meta device (for its shapes: export, model sizes) has nothing to initialize and is skipped.
    """
    if all(p.is_meta for p in module.parameters()):
        return
    def init_one(m: nn.Module) -> None:
        if any(m is s for s in skip):
            return  # tied to a weight initialized elsewhere
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, MLMHead):
            nn.init.zeros_(m.bias)
        elif isinstance(m, Embeddings) and m.query_stream is not None:
            nn.init.normal_(m.query_stream, mean=0.0, std=std)  # XLNet's mask_emb: the normal init

    module.apply(init_one)


class EncoderForMaskedLM(nn.Module):
    """BERT / RoBERTa / ALBERT with the MLM head (plus the NSP/SOP head when cfg.head == "pretraining")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        # As transformers: RoBERTa's head always uses exact GELU; BERT's and ALBERT's follow hidden_act
        self.head = MLMHead(cfg, self.embeddings.word, "gelu" if cfg.family == "roberta" else cfg.hidden_act)
        self.pair_head = PairHead(cfg) if cfg.head == "pretraining" else None
        init_weights(self, cfg.initializer_range, skip=(self.head.decoder,))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, cache: MemoryCache | None = None,
               doc_index: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
               at: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] -> hidden [B, T, H]. attention_mask [B, T]: 1 = attend, 0 = padding (HF convention),
        or [B, T, T] per sample (UniLM); position_ids [B, T] override the default positions (TLM); `at` [B, P]:
        the last layer only at those positions, hidden [B, P, H]."""
        return self.encoder(self.embeddings(input_ids, token_type_ids, position_ids=position_ids), attention_mask,
                            cache, doc_index, at)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., V]; pass only the masked positions to skip full-vocab work elsewhere."""
        return self.head(hidden)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        """MLM logits at `batch["positions"]` (or everywhere), plus NSP/SOP logits when the model has the pair
        head, and the outputs of the pretraining-only heads attached (`objective_heads`). The batch keys are
        listed in `pretrain.models.output`."""
        if "perm_mask" in batch:
            return self._permuted(batch)
        positions = batch.get("positions")
        if batch.get("logits_only") and positions is not None and last_layer_at_positions(self.config) \
                and getattr(self, HEADS, None) is None:
            # Nothing but the MLM head reads the last hidden states: the last layer runs at the masked positions
            # only (the same logits for about 30% of that layer's work at 15% masking; no hidden in the output).
            index, kept = position_index(positions)  # one host sync, for the longest row's count
            if index.shape[1]:  # none masked: the full forward below
                hidden = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                                     position_ids=batch.get("position_ids"), at=index)
                return ModelOutput(logits=self.mlm_logits(hidden[kept]))
        hidden = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                             batch.get("memory"), batch.get("doc_index"), batch.get("position_ids"))
        logits = self.mlm_logits(hidden if positions is None else hidden[positions])
        pair = self.pair_head(hidden) if self.pair_head is not None else None
        return ModelOutput(logits=logits, pair_logits=pair, hidden=hidden, heads=head_outputs(self, hidden, batch))

    def _permuted(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        """The forward of a batch with `perm_mask`: XLNet's two-stream attention, the logits the query stream's.
        The content stream h of token i sees the tokens perm_mask allows and i itself; the query stream g of i
        sees the same tokens' content but not i, starting from the learned vector at i's position, so a
        prediction never reads its own token nor any later in the order."""
        input_ids, types, position_ids = batch["input_ids"], batch.get("token_type_ids"), batch.get("position_ids")
        allowed = ~batch["perm_mask"].bool()
        attention_mask = batch.get("attention_mask")
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, :]
        itself = torch.eye(allowed.shape[-1], dtype=torch.bool, device=allowed.device)
        h = self.embeddings(input_ids, types, position_ids=position_ids)
        g = self.embeddings.query(input_ids, types, position_ids=position_ids)
        h, g = self.encoder.two_streams(h, g, (allowed | itself)[:, None], allowed[:, None])
        positions = batch.get("positions")
        return ModelOutput(logits=self.mlm_logits(g if positions is None else g[positions]), hidden=h)


QUERY_STREAM_KEY = "embeddings.query_stream"  # the query stream's tensor: in checkpoints, never in exports

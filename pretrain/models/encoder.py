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
from pretrain.models.layers import ACTIVATIONS, LayerStack, TransformerLayer, make_norm
from pretrain.models.memory import Memory, MemoryCache, memory_mask, next_memory
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

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, offset: int = 0,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`offset`: the absolute position of the first token (a later segment of a longer text); `position_ids`
        [B, T]: explicit positions instead (TLM's restart at each side)."""
        # token type 0 everywhere when not given, as transformers does; sums in transformers' order
        token_type = self.token_type(token_type_ids) if token_type_ids is not None else self.token_type.weight[0]
        x = self.word(input_ids) + token_type
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

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: MemoryCache | None = None,
                doc_index: torch.Tensor | None = None) -> torch.Tensor:
        """With relative positions, `cache` (if given) holds the memory of earlier segments and receives the
        next one; `doc_index` [B, T] tells which positions continue the memory's document (see `memory`)."""
        if self.project is not None:
            x = self.project(x)
        if self.relative is None:
            x = self.stack(x, mask=padding_mask(attention_mask)).hidden
        else:
            x = self._relative(x, attention_mask, cache, doc_index)
        return self.final_norm(x) if self.final_norm is not None else x

    def _relative(self, x, attention_mask, cache, doc_index) -> torch.Tensor:
        batch, length, hidden = x.shape
        memory = cache.memory if cache is not None else None
        if memory is None:
            memory = Memory.empty(self.stack.depth, batch, hidden, x.dtype, x.device)
        m = memory.length
        score = self.relative.attention_score(length, m + length, query_offset=m, key_offset=0)
        recurrent = cache is not None and self.mem_len > 0
        out = self.stack(x, states=memory.layers if m else None, keep_states=recurrent,
                         mask=memory_mask(memory, doc_index, attention_mask, length), score=score)
        if recurrent:
            cache.memory = next_memory(memory, out.states, doc_index, attention_mask, self.mem_len)
        return out.hidden


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
               doc_index: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] -> hidden [B, T, H]. attention_mask [B, T]: 1 = attend, 0 = padding (HF convention),
        or [B, T, T] per sample (UniLM); position_ids [B, T] override the default positions (TLM)."""
        return self.encoder(self.embeddings(input_ids, token_type_ids, position_ids=position_ids), attention_mask,
                            cache, doc_index)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., V]; pass only the masked positions to skip full-vocab work elsewhere."""
        return self.head(hidden)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        """MLM logits at `batch["positions"]` (or everywhere), plus NSP/SOP logits when the model has the pair
        head. The batch keys are listed in `pretrain.models.output`."""
        hidden = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                             batch.get("memory"), batch.get("doc_index"), batch.get("position_ids"))
        positions = batch.get("positions")
        logits = self.mlm_logits(hidden if positions is None else hidden[positions])
        pair = self.pair_head(hidden) if self.pair_head is not None else None
        return ModelOutput(logits=logits, pair_logits=pair, hidden=hidden)

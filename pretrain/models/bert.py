"""BERT for masked language modelling, architecturally identical to `transformers.BertForMaskedLM`
(conversion is the key map in `pretrain.hf.bert`)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.layers import EncoderLayer


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"model.{name} ({getattr(self, name)}) must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.num_heads ({self.num_heads})")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"model.{name} ({getattr(self, name)}) must be in [0, 1)")
        if not (isinstance(self.pad_token_id, int) and 0 <= self.pad_token_id < self.vocab_size):
            raise ValueError(f"model.pad_token_id ({self.pad_token_id}) must be in [0, model.vocab_size "
                             f"({self.vocab_size}))")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        # padding_idx as in transformers: the pad row starts at zero and gets no gradient from the lookup
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.position.num_embeddings:
            raise ValueError(f"sequence length {t} exceeds model.max_position_embeddings "
                             f"({self.position.num_embeddings})")
        # token type 0 everywhere when not given, as transformers does; sums in transformers' order
        token_type = self.token_type(token_type_ids) if token_type_ids is not None else self.token_type.weight[0]
        x = self.word(input_ids) + token_type + self.position(torch.arange(t, device=input_ids.device))
        return self.dropout(self.norm(x))


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (weight tied to the word embedding) + bias."""

    def __init__(self, cfg: BertConfig, word_embedding: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.decoder.weight = word_embedding.weight
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(hidden)))) + self.bias


class BertForMaskedLM(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout,
                         cfg.attention_dropout, cfg.layer_norm_eps)
            for _ in range(cfg.num_layers)
        )
        self.head = MLMHead(cfg, self.embeddings.word)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if module is self.head.decoder:
                return  # its weight is the word embedding, initialized as an embedding
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MLMHead):
            nn.init.zeros_(module.bias)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, T] -> hidden [B, T, H]. attention_mask [B, T]: 1 = attend, 0 = padding (HF convention)."""
        mask = None
        # No mask lets SDPA pick its fastest kernel; the all() check costs one host sync.
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool()  # [B, 1, 1, T]: mask padded keys only
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> logits [..., V]; pass only the masked positions to skip full-vocab work elsewhere."""
        return self.head(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, V], or [N, V] at the N True entries of the bool mask `positions` [B, T].

        The loss goes through here (not `mlm_logits` directly) so ZeRO-3's module hooks gather every weight.
        """
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        return self.mlm_logits(hidden if positions is None else hidden[positions])

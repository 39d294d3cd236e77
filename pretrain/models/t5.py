"""T5 v1.1: pre-LN RMSNorm layers, gated-GELU feed-forward, bucketed relative positions, no biases, no
attention scaling. Architecturally `transformers.T5ForConditionalGeneration` with feed_forward_proj
"gated-gelu" (which, as of transformers 5, ties the LM head to the shared embedding and does not rescale
the decoder output). The RMSNorm variance is computed in fp32, so bf16 training is safe.
"""

from __future__ import annotations

from collections.abc import Mapping
import torch
from torch import nn

from pretrain.models.config import ModelConfig
from pretrain.models.attention import additive, causal_mask, padding_mask, with_bias
from pretrain.models.memory import MemoryCache, stack_with_memory
from pretrain.models.output import ModelOutput
from pretrain.models.layers import LayerStack, RMSNorm, TransformerLayer
from pretrain.models.positions import T5Buckets


class T5Stack(nn.Module):
    def __init__(self, cfg: ModelConfig, depth: int, decoder: bool):
        super().__init__()
        self.position_bias = T5Buckets(cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
                                       cfg.num_heads, bidirectional=not decoder)
        self.stack = LayerStack(
            lambda: TransformerLayer(cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.hidden_dropout,
                                     cfg.attention_dropout, cfg.layer_norm_eps, pre_ln=True, norm="rms",
                                     activation=cfg.hidden_act, gated=True, bias=False, head_dim=cfg.head_dim,
                                     attention_scale=1.0, cross_attention=decoder, ffn_dropout=cfg.hidden_dropout),
            depth, layerdrop=cfg.layerdrop, checkpointing=cfg.activation_checkpointing)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.decoder = decoder
        self.mem_len = 0 if decoder else cfg.recurrence.mem_len  # the decoder attends to this segment only

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cache: MemoryCache | None = None,
                doc_index: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder with a `cache` (model.recurrence.mem_len > 0) attends to its memory too, the buckets
        reading the true distances between this segment's queries and the memory's keys. `position_ids`
        [B, T]: the tokens' explicit positions (MASS's decoder), from which the buckets read the distances."""
        t = x.shape[1]
        x = self.dropout(x)
        if self.mem_len and cache is not None:
            x = stack_with_memory(self.stack, self.position_bias, x, attention_mask, cache, doc_index, self.mem_len)
            return self.dropout(self.final_norm(x))
        mask = causal_mask(t, attention_mask, x.device) if self.decoder else padding_mask(attention_mask)
        # The bias is computed once (HF: in the first layer) and added to every layer's scores with the mask.
        bias = self.position_bias.attention_bias(t, t) if position_ids is None else \
            self.position_bias.bias_at(position_ids, position_ids)
        mask = with_bias(mask, bias, x.dtype)
        cross = {"context": context, "context_mask": additive(padding_mask(context_mask), x.dtype)}
        x = self.stack(x, mask=mask, **(cross if self.decoder else {})).hidden
        return self.dropout(self.final_norm(x))


class T5ForConditionalGeneration(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.encoder = T5Stack(cfg, cfg.num_layers, decoder=False)
        self.decoder = T5Stack(cfg, cfg.decoder_layers, decoder=True)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight
        self._init_weights()

    def _init_weights(self) -> None:
        """T5's initialization (transformers' `T5PreTrainedModel._init_weights`, factor 1), each submodule
        initializing only its own parameters through `Module.apply` (so `deepspeed.zero.Init` can gather them)."""
        if all(p.is_meta for p in self.parameters()):
            return  # built on the meta device for its shapes: nothing to initialize
        d, d_ff = self.config.hidden_size, self.config.intermediate_size
        inner = self.encoder.stack.layers[0].attn.query.out_features
        head_dim = inner // self.config.num_heads
        linear_std = {"query": (d * head_dim) ** -0.5, "key": d ** -0.5, "value": d ** -0.5, "output": inner ** -0.5,
                      "gate": d ** -0.5, "up": d ** -0.5, "down": d_ff ** -0.5}
        stds = {self.shared: 1.0}
        for name, m in self.named_modules():
            if isinstance(m, T5Buckets):
                stds[m.bias] = d ** -0.5
            elif isinstance(m, nn.Linear) and m is not self.lm_head:
                stds[m] = linear_std[name.rsplit(".", 1)[-1]]

        def init_one(m: nn.Module) -> None:
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
            elif m in stds:
                nn.init.normal_(m.weight, std=stds[m])

        self.apply(init_one)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               cache: MemoryCache | None = None, doc_index: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.shared(input_ids), attention_mask, cache=cache, doc_index=doc_index)

    def forward(self, batch: Mapping) -> ModelOutput:
        """Decoder logits [B, T_dec, V], or [N, V] at the True entries of `batch["positions"]` [B, T_dec]."""
        encoded = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("memory"),
                              batch.get("doc_index"))
        hidden = self.decoder(self.shared(batch["decoder_input_ids"]), batch.get("decoder_attention_mask"),
                              encoded, batch.get("attention_mask"), position_ids=batch.get("decoder_position_ids"))
        positions = batch.get("positions")
        return ModelOutput(self.lm_head(hidden if positions is None else hidden[positions]), hidden=hidden)

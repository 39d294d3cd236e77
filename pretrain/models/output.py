"""The one model interface: every family's forward takes a batch mapping and returns a `ModelOutput`.

Batch keys a model reads (others, such as the objective's labels, are ignored):
    input_ids               [B, T] token ids (the encoder's, for T5/BART)
    attention_mask          [B, T] 1 = token, 0 = padding (absent: nothing padded); encoders also take a
                            per-sample [B, T, T] (True = query i may attend to key j: UniLM)
    position_ids            [B, T] explicit positions (BERT, RoBERTa, ALBERT: TLM; absent: 0..T-1)
    token_type_ids          [B, T] segment ids (BERT, ALBERT, ELECTRA; absent: all 0)
    decoder_input_ids       [B, T_dec] (T5, BART)
    decoder_attention_mask  [B, T_dec] (T5, BART; absent: nothing padded)
    decoder_position_ids    [B, T_dec] the decoder tokens' positions (T5, BART: MASS's fragment at its place in
                            the text; absent: 0..T_dec-1)
    perm_mask               bool [B, T, T] (BERT, RoBERTa, ALBERT with model.query_stream: XLNet's two-stream
                            attention; True = query i must not see token j, as transformers' XLNet): the content
                            stream sees what perm_mask allows and itself, the query stream what it allows; the
                            logits (at `positions`) come from the query stream
    positions               bool [B, T] (decoder's [B, T_dec]): run the vocabulary head only where True, so
                            `logits` is [N, V] for the N True entries (absent: everywhere, [B, T, V])
    logits_only             True: the caller reads `logits` alone (BERT, RoBERTa and ALBERT then run their last
                            layer only at `positions`, and leave `hidden` out; others ignore it)
    memory                  a `pretrain.models.memory.MemoryCache` (recurrent models: Transformer-XL memory of
                            earlier segments, read and replaced by the forward; absent: no memory)
    doc_index               [B, T] documents begun in this segment at or before each position (recurrent
                            models: 0 = continues the memory's document; absent: every position does)
    task                    ELECTRA only: "discriminator" (default) or "generator"
Losses call the model through this forward (never its submodules) so that ZeRO-3's hooks gather every weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    # The main head: MLM / LM logits [B, T, V] (or [N, V] at `positions`); ELECTRA's discriminator: [B, T]
    logits: torch.Tensor
    pair_logits: torch.Tensor | None = None  # NSP/SOP logits [B, 2] (BERT/ALBERT with model.head=pretraining)
    hidden: torch.Tensor | None = None  # the last hidden states [B, T, H] (the decoder's for T5/BART)
    states: list | None = None  # new per-layer state (e.g. a recurrent model's next memories); None: stateless
    heads: dict | None = None  # the pretraining-only heads' outputs by name (pretrain.models.objective_heads)

"""`ModelConfig`: one config for every family; `family` picks the architecture, the rest sizes it.

Fields a family does not use are ignored by it (e.g. `embedding_size` outside ALBERT/ELECTRA). Defaults are
BERT-base; the presets in configs/ set each family's standard values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

FAMILIES = ("bert", "roberta", "albert", "electra", "t5", "bart")
ENCODER_DECODERS = ("t5", "bart")
POSITIONS = ("absolute", "xl")  # xl: Transformer-XL's relative sinusoidal encoding (encoder families, BART)
XL_FAMILIES = ("bert", "roberta", "albert", "bart")  # model.positions=xl; with T5 also model.recurrence
HEADS = ("mlm", "pretraining")  # pretraining = MLM plus the pooler and NSP/SOP head (BERT, ALBERT)
# What each family's model offers an objective (pretrain.objectives matches them against what it needs):
# encoder | encoder_decoder; mlm_head (main output: MLM logits); nsp_head / sop_head (BertForPreTraining's /
# AlbertForPreTraining's pair head, with model.head=pretraining); rtd_heads (ELECTRA's generator and
# discriminator); sentinel_targets (T5: a decoder that emits sentinel-delimited spans, as its tokenizer and
# generation config expect); reconstruction_targets (BART: a decoder that emits the whole original text);
# token_types (a token-type embedding with at least 2 rows: segments A/B, TLM's languages); query_stream
# (XLNet's two-stream attention over the encoder, with model.query_stream); decoder_positions (a decoder that
# takes explicit position ids: MASS's fragment at its place).
CAPABILITIES = {
    "bert": frozenset({"encoder", "mlm_head", "nsp_head", "token_types", "query_stream"}),
    "roberta": frozenset({"encoder", "mlm_head", "query_stream"}),
    "albert": frozenset({"encoder", "mlm_head", "sop_head", "token_types", "query_stream"}),
    "electra": frozenset({"encoder", "rtd_heads"}),
    "t5": frozenset({"encoder_decoder", "sentinel_targets", "decoder_positions"}),
    "bart": frozenset({"encoder_decoder", "reconstruction_targets", "decoder_positions"}),
}
OUTPUT_BIAS_INITS = ("zero", "unigram")
# Families with an MLM head whose bias output_bias_init sets (ELECTRA: its generator's).
MLM_BIAS_FAMILIES = tuple(f for f, offers in CAPABILITIES.items() if offers & {"mlm_head", "rtd_heads"})
# Fields that change how the model trains, not the function its weights compute.
# Recurrence too: the weights are the same with any memory length (export may set mem_len to 0).
# The query stream too: its one vector exists only in pretraining (export leaves it out).
TRAINING_ONLY = ("hidden_dropout", "attention_dropout", "layerdrop", "activation_checkpointing", "init_from",
                 "recurrence", "query_stream", "output_bias_init")


@dataclass
class RecurrenceConfig:
    """Transformer-XL segment recurrence: each layer attends to its own inputs of earlier segments."""

    mem_len: int = 0  # memory positions kept per layer (0: no recurrence); independent of data.seq_len
    clamp_len: int = 0  # relative distances beyond this share one encoding (xl positions); 0: no clamp

    def __post_init__(self):
        if self.mem_len < 0 or self.clamp_len < 0:
            raise ValueError(f"model.recurrence.mem_len ({self.mem_len}) and clamp_len ({self.clamp_len}) "
                             "must be >= 0")


@dataclass
class ModelConfig:
    family: str = "bert"  # one of FAMILIES
    vocab_size: int = 30522  # set from the dataset's tokenizer unless given
    hidden_size: int = 768  # width of every layer
    num_layers: int = 12  # encoder layers
    num_decoder_layers: int | None = None  # T5/BART; None = num_layers
    num_heads: int = 12  # attention heads per layer
    head_dim: int | None = None  # T5's d_kv; None = hidden_size / num_heads
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # gelu (exact) | gelu_new (tanh, ALBERT and T5) | relu
    max_position_embeddings: int = 512  # absolute positions (not T5); RoBERTa's count includes its offset of 2
    type_vocab_size: int = 2  # BERT, ALBERT, ELECTRA: 2; RoBERTa: 1; unused by T5/BART
    hidden_dropout: float = 0.1  # dropout on embeddings and sublayer outputs
    attention_dropout: float = 0.1  # dropout on attention probabilities
    layer_norm_eps: float = 1e-12  # epsilon of every layer norm
    initializer_range: float = 0.02  # std of the normal weight init
    # The MLM output bias at init: zero (BERT's) | unigram (log token frequencies of the training data, so the
    # model starts at the unigram loss and the layers need not carry the word frequencies; BERT-like families)
    output_bias_init: str = "zero"
    pad_token_id: int = 0  # must be the tokenizer's pad id
    bos_token_id: int | None = None  # BART's <s>; RoBERTa's <s>
    eos_token_id: int | None = None  # T5/BART's </s>
    decoder_start_token_id: int | None = None  # T5: pad; BART: </s>
    head: str = "mlm"  # BERT/ALBERT: mlm | pretraining (adds the pooler and NSP/SOP classifier)
    embedding_size: int | None = None  # ALBERT/ELECTRA factorized embeddings; None = hidden_size
    share_layers: bool = False  # ALBERT cross-layer sharing: one layer applied num_layers times
    relative_attention_num_buckets: int = 32  # T5
    relative_attention_max_distance: int = 128  # T5
    scale_embedding: bool = False  # BART: multiply token embeddings by sqrt(hidden_size)
    # ELECTRA's generator (the discriminator takes the sizes above); None = a quarter of the discriminator
    generator_hidden_size: int | None = None  # ELECTRA generator width; None = hidden_size / 4
    generator_num_heads: int | None = None  # ELECTRA generator heads; None = num_heads / 4
    generator_intermediate_size: int | None = None  # ELECTRA generator feed-forward; None = intermediate_size / 4
    generator_num_layers: int | None = None  # ELECTRA generator depth; None = num_layers
    # Beyond the standard architectures (an export then needs the standard value):
    pre_ln: bool = False  # pre-LN encoders (BERT-like families): a norm before each sublayer and at the end
    layerdrop: float = 0.0  # probability of skipping each layer in training
    activation_checkpointing: bool = False  # recompute layer activations in backward to save memory
    init_from: str | None = None  # a Hugging Face model directory to start from (written by `graft import`)
    positions: str = "absolute"  # encoder families and BART: absolute (learned) | xl (relative, Transformer-XL)
    recurrence: RecurrenceConfig = field(default_factory=RecurrenceConfig)  # segment memory (Transformer-XL)
    # XLNet's query stream (objective permuted_lm; bert, roberta, albert): a learned vector, pretraining only
    query_stream: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"model.family {self.family!r} is not known; choose one of {', '.join(FAMILIES)}")
        if isinstance(self.recurrence, dict):  # built from a recorded dict (checkpoints)
            self.recurrence = RecurrenceConfig(**self.recurrence)
        if self.positions not in POSITIONS:
            raise ValueError(f"model.positions {self.positions!r} is not known; choose one of {', '.join(POSITIONS)}")
        if self.positions == "xl" and self.family not in XL_FAMILIES:
            raise ValueError(f"model.positions=xl exists for {', '.join(XL_FAMILIES)}, not {self.family} (T5's "
                             "buckets are relative already and take a memory as they are)")
        if self.recurrence.mem_len and self.family not in (*XL_FAMILIES, "t5"):
            raise ValueError(f"model.recurrence exists for {', '.join(XL_FAMILIES)} and t5, not {self.family}")
        if self.recurrence.mem_len and self.family in XL_FAMILIES and self.positions != "xl":
            raise ValueError("model.recurrence.mem_len needs relative positions: set model.positions=xl (absolute "
                             "positions cannot tell a memory from the segment)")
        if self.query_stream and "query_stream" not in CAPABILITIES[self.family]:
            raise ValueError(f"model.query_stream exists for bert, roberta and albert, not {self.family}")
        if self.query_stream and self.recurrence.mem_len:
            raise ValueError("model.query_stream does not combine with model.recurrence.mem_len (XLNet's memory "
                             "is not built); set one of them off")
        if self.output_bias_init not in OUTPUT_BIAS_INITS:
            raise ValueError(f"model.output_bias_init {self.output_bias_init!r} is not known; choose one of "
                             f"{', '.join(OUTPUT_BIAS_INITS)}")
        if self.output_bias_init != "zero" and self.family not in MLM_BIAS_FAMILIES:
            raise ValueError(f"model.output_bias_init={self.output_bias_init} sets the MLM head's bias, which "
                             f"{', '.join(MLM_BIAS_FAMILIES)} have and {self.family} has not; set it to zero")
        if self.head not in HEADS:
            raise ValueError(f"model.head {self.head!r} is not known; choose one of {', '.join(HEADS)}")
        if self.head == "pretraining" and self.family not in ("bert", "albert"):
            raise ValueError(f"model.head=pretraining (NSP/SOP) exists for bert and albert, not {self.family}")
        from pretrain.models.layers import ACTIVATIONS

        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"model.hidden_act {self.hidden_act!r} is not known; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range",
                     "num_decoder_layers", "head_dim", "embedding_size", "generator_hidden_size",
                     "generator_num_heads", "generator_intermediate_size", "generator_num_layers",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"model.{name} ({value}) must be positive")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be divisible by "
                             f"model.num_heads ({self.num_heads})")
        for name in ("hidden_dropout", "attention_dropout", "layerdrop"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"model.{name} ({getattr(self, name)}) must be in [0, 1)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise ValueError(f"model.{name} ({value}) must be in [0, model.vocab_size ({self.vocab_size}))")
        if self.pre_ln and self.family in ENCODER_DECODERS:
            raise ValueError(f"model.pre_ln applies to the encoder families; {self.family}'s norm placement is fixed "
                             "(T5 is pre-LN, BART post-LN)")
        if self.family == "roberta" and self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError("model.max_position_embeddings must exceed pad_token_id + 1 for roberta (its "
                             "positions start after the padding index)")
        if self.family in ENCODER_DECODERS and self.decoder_start_token_id is None:
            raise ValueError(f"model.decoder_start_token_id must be set for {self.family} (T5: the pad id, "
                             "BART: the </s> id)")
        if self.family == "electra":
            gen = self.generator
            if gen.hidden_size % gen.num_heads:
                raise ValueError(f"model.generator_hidden_size ({gen.hidden_size}) must be divisible by "
                                 f"model.generator_num_heads ({gen.num_heads})")

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model offers an objective (see CAPABILITIES)."""
        return CAPABILITIES[self.family]

    @property
    def is_encoder_decoder(self) -> bool:
        return self.family in ENCODER_DECODERS

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def embed_size(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def generator(self) -> "ModelConfig":
        """ELECTRA's generator as an encoder config (same embeddings, its own sizes)."""
        from dataclasses import replace

        return replace(self, family="bert", hidden_size=self.generator_hidden_size or max(1, self.hidden_size // 4),
                       num_heads=self.generator_num_heads or max(1, self.num_heads // 4),
                       intermediate_size=self.generator_intermediate_size or max(1, self.intermediate_size // 4),
                       num_layers=self.generator_num_layers or self.num_layers,
                       embedding_size=self.embed_size)


def architecture_changes(trained: dict, cfg: ModelConfig) -> list[str]:
    """`model.KEY: old -> new` for each field (training-only ones aside) in which `cfg` differs from the model
    config `trained` (a dict, as recorded in checkpoints): weights of one architecture mean nothing in another,
    even where the tensors have the same shapes (a BERT read as a RoBERTa)."""
    now = asdict(cfg)
    return [f"model.{k}: {trained[k]!r} -> {now[k]!r}" for k in now
            if k not in TRAINING_ONLY and k in trained and now[k] != trained[k]]

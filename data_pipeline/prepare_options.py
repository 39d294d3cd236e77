"""What `graft prepare`'s options accept and default to, apart from the work itself (prepare.py, tokenizer.py):
the command line builds its parser from these without importing numpy, tokenizers or the readers."""

TOKENIZER_KIND_NAMES = ("wordpiece", "bytelevel_bpe", "unigram")  # the keys of tokenizer.TOKENIZER_KINDS
DEFAULT_SHARD_TOKENS = 1 << 26  # 64M tokens: 128 MB shards of uint16

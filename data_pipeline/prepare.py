"""`graft prepare`: raw text -> tokenizer + token shards + manifest."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_pipeline.documents import check_inputs, iter_documents
from data_pipeline.errors import UserError
from data_pipeline.shards import MANIFEST, Manifest, token_dtype, write_shard
from data_pipeline.tokenizer import load_tokenizer, special_token_ids, tokenizer_hash, train_tokenizer

TOKENIZER_FILE = "tokenizer.json"
BATCH_DOCS = 512  # documents per encode_batch call: large enough for tokenizers' own thread pool


@dataclass
class PrepareSummary:
    documents: int
    tokens: int
    shards: int
    vocab_size: int


def prepare(inputs: list[Path], out: Path, vocab_size: int = 8192, tokenizer: Path | None = None,
            text_field: str = "text", shard_tokens: int = 1 << 24, tokenizer_kind: str = "wordpiece") -> PrepareSummary:
    """Tokenize every document of `inputs` into shards under `out`.

    Trains a tokenizer of `tokenizer_kind` on the inputs unless `tokenizer` names an existing one.
    """
    check_inputs(inputs)
    if (out / MANIFEST).exists():
        raise UserError(f"{out} already holds a prepared dataset; choose another --out or delete it first")
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be positive, got {shard_tokens}")
    out.mkdir(parents=True, exist_ok=True)

    docs = lambda: iter_documents(inputs, text_field)  # noqa: E731 - read twice: train, then encode
    if next(docs(), None) is None:
        raise UserError(f"the input ({', '.join(map(str, inputs))}) holds no non-empty document")
    if tokenizer is None:
        tok = train_tokenizer(tqdm(docs(), desc="training tokenizer", unit=" docs"), tokenizer_kind, vocab_size)
    else:
        tok = load_tokenizer(tokenizer)
    specials = special_token_ids(tok)
    tok.save(str(out / TOKENIZER_FILE))
    dtype = token_dtype(tok.get_vocab_size())

    manifest = Manifest(vocab_size=tok.get_vocab_size(), dtype=dtype.str, tokenizer_sha256=tokenizer_hash(tok),
                        special_tokens=specials)
    pending: list[np.ndarray] = []
    pending_tokens = 0
    progress = tqdm(desc="tokenizing", unit=" docs")
    for batch in _batched(docs(), BATCH_DOCS):
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            ids = np.asarray(enc.ids, dtype=dtype)
            if len(ids) == 0:
                continue
            pending.append(ids)
            pending_tokens += len(ids)
            if pending_tokens >= shard_tokens:
                manifest.shards.append(write_shard(out / f"shard_{len(manifest.shards):05d}.bin", pending, dtype))
                pending, pending_tokens = [], 0
        progress.update(len(batch))
        progress.set_postfix(tokens=manifest.total_tokens + pending_tokens, refresh=False)
    progress.close()
    if pending:
        manifest.shards.append(write_shard(out / f"shard_{len(manifest.shards):05d}.bin", pending, dtype))
    if manifest.total_tokens == 0:
        raise UserError("every document tokenized to nothing; check the input files and the tokenizer")
    manifest.save(out)  # last: a dataset without a manifest is visibly unfinished
    summary = PrepareSummary(documents=manifest.total_documents, tokens=manifest.total_tokens,
                             shards=len(manifest.shards), vocab_size=manifest.vocab_size)
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=1))
    return summary


def _batched(items, n):
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch

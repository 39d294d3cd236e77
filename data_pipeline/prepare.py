"""`graft prepare`: raw text -> tokenizer + token shards + manifest, resumable.

Tokenization is `tokenizers`' `encode_batch`, which runs on all cores; a reader thread parses the next
batch of records meanwhile. After every shard, `prepare_state.json` records the shards so far and the
input position right after the shard's last document: an interrupted prepare re-run with the same inputs
continues from there. A finished dataset records its inputs' fingerprint in `summary.json`; re-running
the same prepare finds it and changes nothing.

Format 2: beside every token, its word-start and sentence-start flags (sentences.py); for parallel text
(`pair_fields`), each record is one document, side one then side two, with the second side's first token
flagged and every token's language recorded; for monolingual text with a language field (`language_field`,
multilingual MLM), every token's language is recorded and the manifest says `multilingual`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data_pipeline.dataset_files import write_atomic
from data_pipeline.documents import (DEFAULT_MAX_DOC_BYTES, ReadOptions, Record, expand_inputs,
                                     is_saved_dataset, iter_documents, iter_records)
from data_pipeline.errors import UserError
from data_pipeline.prepare_options import DEFAULT_SHARD_TOKENS
from data_pipeline.sentences import word_and_sentence_flags
from data_pipeline.shards import (FORMAT_VERSION, MANIFEST, SIDE, TOKENIZER_FILE, Manifest, ShardInfo, token_dtype,
                                  write_shard)
from data_pipeline.tokenizer import read_tokenizer, special_token_ids, tokenizer_hash, train_tokenizer

SUMMARY_FILE = "summary.json"
STATE_FILE = "prepare_state.json"
BATCH_DOCS = 1024  # documents per encode_batch call: large enough for tokenizers' own thread pool


@dataclass
class PrepareSummary:
    documents: int  # kept documents, as written
    tokens: int
    shards: int
    vocab_size: int
    records_read: int = 0  # every record of the input, kept or skipped
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records
    text_bytes: int = 0  # UTF-8 bytes of the kept documents' text
    fingerprint: str = ""  # of the inputs and options: a re-run with the same ones changes nothing
    resumed: bool = False  # whether this run continued an interrupted one


def prepare(inputs: list[Path | str], out: Path, vocab_size: int = 8192, tokenizer: str | Path | None = None,
            text_field: str = "text", shard_tokens: int = DEFAULT_SHARD_TOKENS, tokenizer_kind: str = "wordpiece",
            txt_mode: str = "paragraph", skip_bad: bool = False, max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
            progress: bool = True, pair_fields: tuple[str, str] | None = None,
            language_fields: tuple[str, str] | None = None, language_field: str | None = None) -> PrepareSummary:
    """Tokenize every document of `inputs` (files, globs, saved `datasets` directories) into shards under `out`.

    Trains a tokenizer of `tokenizer_kind` on the inputs unless `tokenizer` names an existing one (a
    tokenizer.json or a directory holding one, local or at a URL). With `pair_fields` and `language_fields`
    (two JSON field names each) the inputs are parallel jsonl records; with `language_field` monolingual jsonl
    records of several languages, each with its language code in that field.
    """
    out = Path(out)
    paths = expand_inputs([str(p) for p in inputs])
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be positive, got {shard_tokens}")
    if max_doc_bytes <= 0:
        raise UserError(f"--max-doc-mb must be positive, got {max_doc_bytes / 2**20:g}")
    options = ReadOptions(text_field=text_field, txt_mode=txt_mode, max_doc_bytes=max_doc_bytes, skip_bad=skip_bad,
                          pair_fields=pair_fields, language_fields=language_fields, language_field=language_field)
    # A given tokenizer is read first and once: the clear error for a missing or malformed one, before any work.
    given = read_tokenizer(tokenizer) if tokenizer else None
    fingerprint = _fingerprint(paths, options, given and given[0], tokenizer_kind, vocab_size, shard_tokens)

    if (out / MANIFEST).exists():
        done = _finished_summary(out)
        if done is not None and done.fingerprint == fingerprint:
            print(f"{out} is already prepared from these inputs with these options; nothing to do")
            return done
        raise UserError(f"{out} already holds a prepared dataset of other inputs or options; choose another --out "
                        "or delete it first")
    state = _load_state(out)
    if state is not None and state["fingerprint"] != fingerprint:
        # Unfinished output of this same command with other inputs (say, a bad line since fixed): start over.
        print(f"{out} holds an interrupted prepare of other inputs or options; starting over")
        _remove_stray_shards(out, keep=0)
        (out / STATE_FILE).unlink()
        state = None
    out.mkdir(parents=True, exist_ok=True)

    if state is None:
        if next(iter_documents(paths, options), None) is None:
            raise UserError(f"the input ({', '.join(map(str, paths))}) holds no non-empty document")
        if tokenizer is None:
            tok = train_tokenizer(_Passes(paths, options, progress), tokenizer_kind, vocab_size)
            text = tok.to_str()
        else:
            text, tok = given  # kept as it is: datasets sharing a tokenizer share its hash
        special_token_ids(tok)  # fails early when a special token is missing
        write_atomic(out / TOKENIZER_FILE, text.encode())
        state = {"fingerprint": fingerprint, "tokenizer_sha256": tokenizer_hash(text), "shards": [],
                 "position": [0, 0], "records_read": 0, "skipped": {}, "text_bytes": 0, "languages": []}
        _save_state(out, state)
        resumed = False
    else:
        # The tokenizer of the interrupted run, kept as written: retraining it would cost a pass over the input.
        text, tok = read_tokenizer(out / TOKENIZER_FILE)
        if tokenizer_hash(text) != state["tokenizer_sha256"]:
            raise UserError(f"{out / TOKENIZER_FILE} changed since the interrupted prepare; delete {out} and "
                            "start over")
        print(f"resuming the interrupted prepare of {out} after {len(state['shards'])} shard(s)")
        resumed = True
    return _encode(paths, options, out, tok, state, shard_tokens, resumed, progress)


class _Passes:
    """The input's documents, read afresh on every iteration (tokenizer training may read them twice)."""

    def __init__(self, paths: list[Path], options: ReadOptions, progress: bool):
        self.paths, self.options, self.progress, self.count = paths, options, progress, 0

    def __iter__(self):
        self.count += 1
        return iter(tqdm(iter_documents(self.paths, self.options), desc=f"training tokenizer (pass {self.count})",
                         unit=" docs", disable=not self.progress))


def _encode(paths, options, out: Path, tok, state: dict, shard_tokens: int, resumed: bool,
            progress: bool) -> PrepareSummary:
    dtype = token_dtype(tok.get_vocab_size())
    manifest = Manifest(vocab_size=tok.get_vocab_size(), dtype=dtype.str, tokenizer_sha256=state["tokenizer_sha256"],
                        special_tokens=special_token_ids(tok), shards=[ShardInfo(**s) for s in state["shards"]],
                        format_version=FORMAT_VERSION, languages=list(state.get("languages", [])),
                        multilingual=options.language_field is not None)
    parallel = options.pair_fields is not None
    languages = parallel or manifest.multilingual
    _remove_stray_shards(out, len(manifest.shards))
    counts = Counter(state["skipped"])
    records_read, text_bytes = state["records_read"], state["text_bytes"]
    pending: list[np.ndarray] = []
    pending_flags: list[np.ndarray] = []
    pending_languages: list[np.ndarray] = []
    pending_tokens = 0

    def write(pending, pending_flags, pending_languages):
        path = out / f"shard_{len(manifest.shards):05d}.bin"
        manifest.shards.append(write_shard(path, pending, dtype, pending_flags,
                                           pending_languages if languages else None))

    started = time.perf_counter()
    bar = tqdm(desc="tokenizing", unit=" docs", disable=not progress, initial=records_read)
    for batch, encodings in _encoded(tok, _prefetched(_record_batches(paths, options, tuple(state["position"])))):
        encoded = iter(encodings)
        for record in batch:
            records_read += 1
            if record.text is None:
                counts[record.skipped] += 1
                continue
            sides = getattr(record.text, "sides", (record.text,))  # PairText: two, LanguageText: one
            encodings_of = [next(encoded) for _ in sides]
            if any(len(e.ids) == 0 for e in encodings_of):
                counts["no_tokens"] += 1
                continue
            ids = np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encodings_of])
            side_flags = [word_and_sentence_flags(e.word_ids, e.offsets, t)
                          for e, t in zip(encodings_of, sides, strict=True)]
            if parallel:
                side_flags[1][0] |= SIDE
            if languages:
                pending_languages.append(np.concatenate(
                    [np.full(len(e.ids), _language_index(manifest.languages, code), dtype=np.uint8)
                     for e, code in zip(encodings_of, record.text.languages, strict=True)]))
            text_bytes += len(record.text.encode("utf-8"))
            pending.append(ids)
            pending_flags.append(np.concatenate(side_flags))
            pending_tokens += len(ids)
            if pending_tokens >= shard_tokens:
                write(pending, pending_flags, pending_languages)
                pending, pending_flags, pending_languages, pending_tokens = [], [], [], 0
                state.update(shards=[asdict(s) for s in manifest.shards], position=list(record.position),
                             records_read=records_read, skipped=dict(counts), text_bytes=text_bytes,
                             languages=manifest.languages)
                _save_state(out, state)
        bar.update(len(batch))
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(tokens=f"{manifest.total_tokens + pending_tokens:,}",
                        MBps=f"{text_bytes / elapsed / 1e6:.1f}", refresh=False)
    bar.close()
    if pending:
        write(pending, pending_flags, pending_languages)
    if manifest.total_tokens == 0:
        raise UserError("every document tokenized to nothing; check the input files and the tokenizer")
    manifest.save(out)  # after every shard: a dataset without a manifest is visibly unfinished
    summary = PrepareSummary(documents=manifest.total_documents, tokens=manifest.total_tokens,
                             shards=len(manifest.shards), vocab_size=manifest.vocab_size, records_read=records_read,
                             skipped=dict(sorted(counts.items())), text_bytes=text_bytes,
                             fingerprint=state["fingerprint"], resumed=resumed)
    write_atomic(out / SUMMARY_FILE, json.dumps(asdict(summary), indent=1).encode())
    (out / STATE_FILE).unlink()
    return summary


def _encoded(tok, batches: Iterator[list[Record]]):
    """(batch, encodings of its kept texts), encoding the next batch on all cores while this one is written."""
    def encode(batch):  # a parallel record's two sides are encoded apart
        texts = [side for r in batch if r.text is not None
                 for side in getattr(r.text, "sides", (r.text,))]
        return tok.encode_batch(texts, add_special_tokens=False)

    with ThreadPoolExecutor(max_workers=1) as pool:  # encode_batch releases the GIL
        current = next(batches, None)
        future = pool.submit(encode, current) if current is not None else None
        while current is not None:
            following = next(batches, None)
            encodings = future.result()
            future = pool.submit(encode, following) if following is not None else None
            yield current, encodings
            current = following


def _language_index(languages: list[str], code: str) -> int:
    """The index of language `code` in the dataset's table, added on first sight (so in input order)."""
    if code not in languages:
        if len(languages) == 255:
            raise UserError(f"text with more than 255 languages (at {code!r}); split the inputs")
        languages.append(code)
    return languages.index(code)


def _record_batches(paths, options, start) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in iter_records(paths, options, start):
        batch.append(record)
        if len(batch) == BATCH_DOCS:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetched(batches: Iterator[list[Record]], depth: int = 4) -> Iterator[list[Record]]:
    """Read and parse the next batches in a thread while `encode_batch` (which releases the GIL) runs."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for b in batches:
                if stop.is_set():
                    return
                q.put(b)
            q.put(done)
        except BaseException as exc:  # re-raised in the consumer, e.g. a UserError naming a bad line
            q.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def _fingerprint(paths, options: ReadOptions, tokenizer_text: str | None, kind: str, vocab_size: int,
                 shard_tokens: int) -> str:
    """Identifies the inputs (path, size, mtime of every file) and every option that changes the output."""
    files = []
    for path in paths:
        members = sorted(p for p in path.rglob("*") if p.is_file()) if is_saved_dataset(path) else [path]
        files += [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in members]
    if tokenizer_text is not None:
        tok = {"file_sha256": tokenizer_hash(tokenizer_text)}  # the given file's, as read
    else:
        tok = {"kind": kind, "vocab_size": vocab_size}
    read = {k: v for k, v in asdict(options).items() if not (k == "language_field" and v is None)}  # as before it
    blob = json.dumps({"files": files, "options": read, "tokenizer": tok, "shard_tokens": shard_tokens},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _finished_summary(out: Path) -> PrepareSummary | None:
    try:
        return PrepareSummary(**json.loads((out / SUMMARY_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _load_state(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is damaged ({exc}); delete {out} and prepare again") from exc


def _save_state(out: Path, state: dict) -> None:
    write_atomic(out / STATE_FILE, json.dumps(state).encode())


def _remove_stray_shards(out: Path, keep: int) -> None:
    """Shards an interrupted run wrote after its last saved state are written again."""
    for path in out.glob("shard_*.bin*"):
        number = path.name[len("shard_"):].split(".")[0]
        if not number.isdigit() or int(number) >= keep or not path.name.endswith(".bin"):
            path.unlink()

"""Read documents from raw inputs, one record at a time, in bounded memory.

Formats: JSON Lines (one object per line), plain text (documents separated by blank lines, or one per
line), parquet and csv (through `datasets` in streaming mode), and directories written by
`datasets.Dataset.save_to_disk` (memory-mapped Arrow). JSON Lines and text are read by Graft itself, in
binary, so that every problem is reported with its file and line and a bad line can be skipped alone.

Parallel text (for TLM): JSON Lines records with two text fields and their two language-code fields
(`ReadOptions.pair_fields`, `language_fields`); such a record's text is a `PairText`, both sides joined by a
newline (what tokenizer training and the size checks read), which carries the sides and languages apart.
Monolingual text of several languages (multilingual MLM): JSON Lines records with a text field and a
language-code field (`ReadOptions.language_field`); such a record's text is a `LanguageText` (one side).

Every record yields a `Record`: its text, or the reason it was skipped. Empty documents are always
skipped; other bad records (invalid UTF-8, malformed JSON, a missing text field, binary data, a document
over the size limit) raise a `UserError` naming file and line unless `skip_bad` is set.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_pipeline.errors import UserError

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
TEXT_SUFFIXES = {".txt", ".text"}
DATASETS_SUFFIXES = {".parquet": "parquet", ".csv": "csv"}
TXT_MODES = ("paragraph", "line")
DEFAULT_MAX_DOC_BYTES = 16 << 20
SKIP_REASONS = ("empty", "invalid_utf8", "malformed_json", "missing_text_field", "binary", "too_long", "no_tokens")


@dataclass
class Record:
    position: tuple[int, int]  # (input index, records of that input read so far): where a resume continues
    text: str | None  # None when skipped
    skipped: str | None = None  # one of SKIP_REASONS


class PairText(str):
    """A parallel record: the two sides joined by a newline, with `sides` and `languages` kept apart."""

    sides: tuple[str, str]
    languages: tuple[str, str]

    def __new__(cls, first: str, second: str, languages: tuple[str, str]):
        text = super().__new__(cls, first + "\n" + second)
        text.sides, text.languages = (first, second), languages
        return text


class LanguageText(str):
    """A monolingual record of a known language: one side, as a `PairText` has two."""

    sides: tuple[str]
    languages: tuple[str]

    def __new__(cls, text: str, language: str):
        out = super().__new__(cls, text)
        out.sides, out.languages = (text,), (language,)
        return out


@dataclass
class ReadOptions:
    text_field: str = "text"
    txt_mode: str = "paragraph"  # "paragraph": blank lines separate documents; "line": one per line
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
    skip_bad: bool = False
    pair_fields: tuple[str, str] | None = None  # parallel jsonl: the two text fields (then text_field is unused)
    language_fields: tuple[str, str] | None = None  # parallel jsonl: the fields holding each side's language code
    language_field: str | None = None  # monolingual jsonl of several languages: the field holding a record's code

    def __post_init__(self):
        if self.language_field is not None and self.pair_fields is not None:
            raise UserError("--language-field is for monolingual text; parallel text names its two language fields "
                            "with --language-fields")
        if (self.pair_fields is None) != (self.language_fields is None):
            raise UserError("parallel text needs both --pair-fields and --language-fields (two field names each)")
        for name, fields in (("--pair-fields", self.pair_fields), ("--language-fields", self.language_fields)):
            if fields is not None and (len(fields) != 2 or len(set(fields)) != 2):
                raise UserError(f"{name} takes two different field names, got {', '.join(fields)}")
        if self.pair_fields is not None:
            self.pair_fields, self.language_fields = tuple(self.pair_fields), tuple(self.language_fields)


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "state.json",
                                                                      "dataset_dict.json"))


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Each pattern is a file, a saved `datasets` directory, or a glob (sorted, so the order is stable)."""
    if not patterns:
        raise UserError("no input files given; pass one or more .jsonl, .txt, .parquet or .csv files, globs, "
                        "or directories written by datasets' save_to_disk")
    paths = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise UserError(f"input pattern {pattern!r} matches no file")
            paths += matches
        else:
            paths.append(Path(pattern))
    check_inputs(paths)
    return paths


def check_inputs(paths: list[Path]) -> None:
    if not paths:
        raise UserError("no input files given; pass one or more .jsonl, .txt, .parquet or .csv files")
    known = JSONL_SUFFIXES | TEXT_SUFFIXES | set(DATASETS_SUFFIXES)
    for path in paths:
        if is_saved_dataset(path):
            continue
        if not path.is_file():
            raise UserError(f"input file {path} does not exist" + (" (a directory, but not one written by "
                            "datasets' save_to_disk)" if path.is_dir() else ""))
        if path.suffix not in known:
            raise UserError(f"input file {path}: unknown format {path.suffix!r}; use .jsonl (one JSON object per "
                            "line), .txt, .parquet, .csv, or a directory written by datasets' save_to_disk")


def iter_records(paths: list[Path], options: ReadOptions, start: tuple[int, int] = (0, 0)) -> Iterator[Record]:
    """Every record of `paths` in order, from `start` (a `Record.position` of an earlier read) on."""
    for index in range(start[0], len(paths)):
        path = paths[index]
        skip = start[1] if index == start[0] else 0
        for n, (where, text, reason) in enumerate(_file_records(path, options), 1):
            if n <= skip:
                continue
            if reason is None:
                reason = _problem(text, options)
            if reason not in (None, "empty") and not options.skip_bad:
                explain = _EXPLAIN[reason].format(field=options.text_field)
                if reason == "missing_text_field" and options.pair_fields:
                    explain = (f"expected an object with non-empty string fields {', '.join(options.pair_fields)} "
                               f"(the two sides) and {', '.join(options.language_fields)} (their language codes); "
                               "set the names with --pair-fields and --language-fields")
                elif reason == "missing_text_field" and options.language_field:
                    explain = (f"expected an object with string fields {options.text_field!r} (the text) and "
                               f"{options.language_field!r} (a non-empty language code); set the names with "
                               "--text-field and --language-field")
                raise UserError(f"{where}: {explain}; fix the input or pass --skip-bad to skip and "
                                "count such records")
            yield Record(position=(index, n), text=None if reason else text, skipped=reason)


def iter_documents(paths: list[Path], options: ReadOptions | None = None) -> Iterator[str]:
    """The text of every kept document, in order."""
    for record in iter_records(paths, options or ReadOptions()):
        if record.text is not None:
            yield record.text


_EXPLAIN = {
    "invalid_utf8": "invalid UTF-8; convert the file to UTF-8",
    "malformed_json": "not valid JSON; each line must be one JSON object",
    "missing_text_field": "expected an object with a string field {field!r} (set the field name with --text-field)",
    "binary": "binary data, not text",
    "too_long": "document larger than the limit (--max-doc-mb)",
}


def _problem(text: str, options: ReadOptions) -> str | None:
    if not text.strip():
        return "empty"
    if len(text) * 4 > options.max_doc_bytes and len(text.encode("utf-8")) > options.max_doc_bytes:
        return "too_long"
    if "\x00" in text:  # never in real text; always in binary files
        return "binary"
    return None


def _file_records(path: Path, options: ReadOptions) -> Iterator[tuple[str, str | None, str | None]]:
    """(where, text, reason) per record; reason is set for records that could not even be decoded."""
    if options.pair_fields is not None and (is_saved_dataset(path) or path.suffix not in JSONL_SUFFIXES):
        raise UserError(f"{path}: parallel text (--pair-fields) is read from .jsonl files only")
    if options.language_field is not None and (is_saved_dataset(path) or path.suffix not in JSONL_SUFFIXES):
        raise UserError(f"{path}: text with a language field (--language-field) is read from .jsonl files only")
    if is_saved_dataset(path):
        yield from _saved_dataset_records(path, options.text_field)
    elif path.suffix in DATASETS_SUFFIXES:
        yield from _datasets_records(path, DATASETS_SUFFIXES[path.suffix], options.text_field)
    elif path.suffix in JSONL_SUFFIXES:
        yield from _jsonl_records(path, options)
    elif options.txt_mode == "line":
        for lineno, line, reason in _lines(path, options.max_doc_bytes):
            yield f"{path}:{lineno}", None if reason else line.rstrip("\r\n"), reason
    else:
        yield from _paragraph_records(path, options)


def _lines(path: Path, max_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, decoded line, reason) per line, never holding more than `max_bytes` of one line."""
    with open(path, "rb") as f:
        lineno = 0
        while raw := f.readline(max_bytes + 1):
            lineno += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # drop the rest of the oversized line in bounded pieces
                yield lineno, None, "too_long"
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield lineno, None, "invalid_utf8"
                continue
            yield (lineno, None, "binary") if "\x00" in line else (lineno, line, None)


def _jsonl_records(path: Path, options: ReadOptions):
    for lineno, line, reason in _lines(path, options.max_doc_bytes):
        where = f"{path}:{lineno}"
        if reason:
            yield where, None, reason
            continue
        if not line.strip():
            continue  # a blank line is no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            yield where, None, "malformed_json"
            continue
        text = _pair(record, options) if options.pair_fields else _with_language(record, options) \
            if options.language_field else record.get(options.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            yield where, None, "missing_text_field"
            continue
        yield where, text, None


def _pair(record, options: ReadOptions) -> PairText | None:
    """The parallel record's PairText, or None when a field is missing, not a string, or a side is empty."""
    if not isinstance(record, dict):
        return None
    sides = [record.get(f) for f in options.pair_fields]
    languages = [record.get(f) for f in options.language_fields]
    if not all(isinstance(v, str) and v.strip() for v in sides + languages):
        return None
    return PairText(sides[0], sides[1], (languages[0].strip(), languages[1].strip()))


def _with_language(record, options: ReadOptions) -> LanguageText | None:
    """The record's LanguageText, or None when the text or the language code is missing or not a string."""
    if not isinstance(record, dict):
        return None
    text, code = record.get(options.text_field), record.get(options.language_field)
    if not (isinstance(text, str) and isinstance(code, str) and code.strip()):
        return None
    return LanguageText(text, code.strip())


def _paragraph_records(path: Path, options: ReadOptions):
    """Blank-line separated documents; a bad one is named by its bad line and skipped up to the next blank line."""
    paragraph: list[str] = []
    size, first, bad = 0, 0, None
    for lineno, line, reason in _lines(path, options.max_doc_bytes):
        if line is not None and not line.strip():  # a blank line ends the paragraph
            if paragraph or bad:
                yield f"{path}:{first}", None if bad else "\n".join(paragraph), bad
            paragraph, size, bad = [], 0, None
            continue
        if bad:
            continue  # the rest of a bad paragraph
        if not paragraph:
            first = lineno
        if line is not None:
            size += len(line)
            if size > options.max_doc_bytes:
                reason = "too_long"
        if reason:
            bad, paragraph, first = reason, [], lineno
            continue
        paragraph.append(line.rstrip("\r\n"))
    if paragraph or bad:
        yield f"{path}:{first}", None if bad else "\n".join(paragraph), bad


def _column_texts(rows, path, field: str, first_row: int = 1):
    for n, row in enumerate(rows, first_row):
        if field not in row:
            raise UserError(f"{path}: no column {field!r} (columns: {', '.join(row)}); set it with --text-field")
        text = row[field]
        yield f"{path}: row {n}", text if isinstance(text, str) else None, None if isinstance(text, str) else \
            "missing_text_field"


def _datasets_records(path: Path, builder: str, field: str):
    import datasets

    try:
        stream = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True)
        yield from _column_texts(iter(stream), path, field)
    except UserError:
        raise
    except Exception as exc:  # arrow / pandas raise many types for a damaged file
        raise UserError(f"{path}: cannot read it as {builder} ({type(exc).__name__}: {exc})") from exc


def _saved_dataset_records(path: Path, field: str):
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))  # memory-mapped: nothing is loaded whole
    except Exception as exc:
        raise UserError(f"{path}: cannot open it with datasets.load_from_disk ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise UserError(f"{path} holds splits {', '.join(ds)} and no 'train'; pass one split's directory")
        ds = ds["train"]
    if field not in ds.column_names:
        raise UserError(f"{path}: no column {field!r} (columns: {', '.join(ds.column_names)}); set --text-field")
    for start in range(0, len(ds), 1000):
        batch = ds[start:start + 1000][field]
        yield from _column_texts(({field: t} for t in batch), path, field, first_row=start + 1)

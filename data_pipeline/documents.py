"""Read documents from raw text files: JSON Lines (one object per line) or plain text (blank-line separated)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from data_pipeline.errors import UserError

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
TEXT_SUFFIXES = {".txt", ".text"}


def check_inputs(paths: list[Path]) -> None:
    if not paths:
        raise UserError("no input files given; pass one or more .jsonl or .txt files")
    for path in paths:
        if not path.is_file():
            raise UserError(f"input file {path} does not exist")
        if path.suffix not in JSONL_SUFFIXES | TEXT_SUFFIXES:
            raise UserError(f"input file {path}: unknown format {path.suffix!r}; use .jsonl (one JSON object per "
                            "line) or .txt (documents separated by blank lines)")


def iter_documents(paths: list[Path], text_field: str = "text") -> Iterator[str]:
    """Every non-empty document's text, file by file, in order."""
    for path in paths:
        reader = _jsonl_texts(path, text_field) if path.suffix in JSONL_SUFFIXES else _txt_texts(path)
        for text in reader:
            if text.strip():
                yield text


def _jsonl_texts(path: Path, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(_decoded_lines(f, path), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object")
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise UserError(f"{path}:{lineno}: expected an object with a string field {text_field!r}; "
                                "set the field name with --text-field")
            yield record[text_field]


def _txt_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        paragraph: list[str] = []
        for line in _decoded_lines(f, path):
            if line.strip():
                paragraph.append(line.rstrip("\n"))
            elif paragraph:
                yield "\n".join(paragraph)
                paragraph = []
        if paragraph:
            yield "\n".join(paragraph)


def _decoded_lines(f, path: Path) -> Iterator[str]:
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            yield line
    except UnicodeDecodeError as exc:
        # The text layer decodes ahead in chunks, so the failing read is usually lines before the bad
        # byte: find the line that holds it in the raw bytes.
        lineno = _first_invalid_utf8_line(path) or lineno + 1
        raise UserError(f"{path}:{lineno}: invalid UTF-8 ({exc.reason}); convert the file to UTF-8") from exc


def _first_invalid_utf8_line(path: Path) -> int | None:
    # Splitting on b"\n" is safe: no multi-byte UTF-8 sequence contains that byte.
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None

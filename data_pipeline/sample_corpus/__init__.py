"""The bundled sample corpus: sections of the Python documentation, one JSON record each (see README.md)."""

from pathlib import Path

SAMPLE_CORPUS = Path(__file__).resolve().parent / "python_docs.jsonl"

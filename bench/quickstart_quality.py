"""Does the quickstart's model know its corpus? Fill-mask hits on fixed sentences about Python.

    PYTHONPATH=. python bench/quickstart_quality.py [--out DIR] [--export DIR]

Runs `graft quickstart` (prepare, train, export; 2 processes) into a fresh directory, then asks the export,
through `transformers.pipeline("fill-mask")`, for the 5 likeliest words of each sentence in SENTENCES and
counts the sentences whose expected word is among them. The sentences and their words were written down and
committed before any tuning of the training recipe, and the recipe was chosen on held-out loss, never on
these hits (see docs/recipe.md). `--export DIR` scores an existing export instead of running the quickstart.
Prints `quickstart_fill_mask_hits` (and the quickstart's wall time) last, as one JSON line. Goal: at least half.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REPO_ROOT  # noqa: E402

# (sentence, expected word): the tokenizer lowercases, and every word is one token of the quickstart's vocabulary.
SENTENCES = [
    ("The [MASK] statement is used to leave a loop early.", "break"),
    ("A dictionary maps keys to [MASK].", "values"),
    ("Use the [MASK] keyword to define a function.", "def"),
    ("An exception is raised with the [MASK] statement.", "raise"),
    ("The built-in function [MASK] returns the number of items in a container.", "len"),
    ("A module is loaded with the [MASK] statement.", "import"),
    ("Exceptions are handled with the try and [MASK] statements.", "except"),
    ("A function without a return statement returns [MASK].", "none"),
    ("The [MASK] function writes text to standard output.", "print"),
    ("The [MASK] loop repeats as long as its condition is true.", "while"),
    ("A [MASK] is an immutable sequence of Unicode characters.", "string"),
    ("An anonymous function is created with a [MASK] expression.", "lambda"),
]
TOP_K = 5


def fill_mask_hits(export: Path) -> tuple[int, list[str]]:
    """(hits, one line per sentence) for the model in `export`."""
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(export), device="cpu")
    hits, lines = 0, []
    for sentence, word in SENTENCES:
        guesses = [p["token_str"].strip().lower() for p in fill(sentence, top_k=TOP_K)]
        hit = word in guesses
        hits += hit
        lines.append(f"{'HIT ' if hit else 'miss'} {sentence}  [{word}] -> {', '.join(guesses)}")
    return hits, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "graft-bench" / "quickstart"),
                        help="quickstart directory (emptied first; default: %(default)s)")
    parser.add_argument("--export", help="score this Hugging Face export instead of running the quickstart")
    args = parser.parse_args()
    seconds = None
    export = Path(args.export) if args.export else Path(args.out) / "hf"
    if not args.export:
        shutil.rmtree(args.out, ignore_errors=True)
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "launch.cli", "quickstart", "--out", args.out], check=True,
                       cwd=REPO_ROOT, capture_output=True)
        seconds = round(time.monotonic() - start, 1)
    hits, lines = fill_mask_hits(export)
    print("\n".join(lines))
    print(json.dumps({"quickstart_fill_mask_hits": hits, "quickstart_sentences": len(SENTENCES),
                      "quickstart_seconds": seconds}))


if __name__ == "__main__":
    main()

"""prepare's tokenization throughput versus `tokenizers`' own `encode_batch` on the same text.

Both sides use the same trained tokenizer on the same documents (the bundled sample corpus, repeated):
  prepare        `prepare(..., tokenizer=...)`: reads the jsonl, tokenizes, writes shards and manifest
  encode_batch   `Tokenizer.encode_batch` over the texts already in memory, in batches of 1024
Run: python bench/prepare.py
The last line printed is one JSON object: {"prepare_vs_tokenizers": prepare's tokens/s over encode_batch's}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from data_pipeline.prepare import prepare  # noqa: E402
from data_pipeline.sample_corpus import SAMPLE_CORPUS  # noqa: E402
from data_pipeline.tokenizer import train_tokenizer  # noqa: E402



def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "graft-bench-prepare"))
    ap.add_argument("--copies", type=int, default=8, help="sample corpus repetitions (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side; the best counts (default: %(default)s)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    corpus.write_text(SAMPLE_CORPUS.read_text() * args.copies)
    texts = [json.loads(line)["text"] for line in corpus.open()]
    tok = train_tokenizer(texts[: len(texts) // args.copies], "wordpiece", 8192)
    tok.save(str(work / "tokenizer.json"))
    log(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, {len(texts):,} documents")

    best = {"prepare": 0.0, "encode_batch": 0.0}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        start = time.perf_counter()
        tokens = sum(len(e.ids) for i in range(0, len(texts), 1024)
                     for e in tok.encode_batch(texts[i:i + 1024], add_special_tokens=False))
        best["encode_batch"] = max(best["encode_batch"], tokens / (time.perf_counter() - start))

        shutil.rmtree(work / "out", ignore_errors=True)
        start = time.perf_counter()
        summary = prepare([corpus], work / "out", tokenizer=work / "tokenizer.json", progress=False)
        best["prepare"] = max(best["prepare"], summary.tokens / (time.perf_counter() - start))
        assert summary.tokens == tokens
    log(f"tokens/s (best of {args.repeats}): prepare {best['prepare']:,.0f}, encode_batch {best['encode_batch']:,.0f}")
    print(json.dumps({"prepare_vs_tokenizers": round(best["prepare"] / best["encode_batch"], 3)}))


if __name__ == "__main__":
    main()

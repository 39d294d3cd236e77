"""`graft quickstart`: prepare -> train (2 processes, ZeRO-2) -> export -> fill-mask, on the bundled corpus."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.errors import UserError
from data_pipeline.prepare import prepare
from data_pipeline.sample_corpus import SAMPLE_CORPUS
from launch.local import launch_training
from pretrain.config import CONFIGS_DIR
from pretrain.export import export

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = CONFIGS_DIR / "quickstart.yaml"
VOCAB_SIZE = 4096  # enough for a corpus of 1.0M tokens; a smaller head and embedding: more steps fit (docs/recipe.md)
SENTENCES = [
    "The [MASK] statement is used to leave a loop early.",
    "A dictionary maps keys to [MASK].",
    "This function returns the [MASK] of the list.",
    "Strings are [MASK] sequences of characters.",
]


def quickstart(out: Path, nproc: int = 2, overrides: list[str] = ()) -> None:
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already holds a quickstart; pass --out NEW_DIR or delete it")
    data, run, hf = out / "data", out / "run", out / "hf"
    print(f"[1/4] prepare {SAMPLE_CORPUS.name} -> {data}")
    summary = prepare([SAMPLE_CORPUS], data, vocab_size=VOCAB_SIZE)
    print(f"      {summary.documents:,} documents, {summary.tokens:,} tokens, vocabulary {summary.vocab_size:,}")
    print(f"[2/4] train {CONFIG.name} on {nproc} processes -> {run}")
    launch_training(str(CONFIG), [f"data.path={data}", f"train.run_dir={run}", *overrides], nproc=nproc,
                    resume=False)
    print(f"[3/4] export -> {hf}")
    result = export(run, hf)
    print(f"      transformers reloads it; logits match Graft's within {result.max_abs_diff:.2e}")
    print("[4/4] transformers.pipeline('fill-mask') on the export:")
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(hf), device="cpu")
    for sentence in SENTENCES:
        guesses = ", ".join(f"{p['token_str']} ({p['score']:.2f})" for p in fill(sentence, top_k=3))
        print(f"  {sentence}\n      -> {guesses}")
    print(f"\ndone: run directory {run}, Hugging Face model {hf}; TensorBoard: tensorboard --logdir {run}/tensorboard")

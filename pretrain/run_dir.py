"""The run directory's layout: every file and folder name a run writes, in one place.

    RUN_DIR/
      config.yaml            the resolved run config (written by the launcher)
      deepspeed.json         the DeepSpeed JSON generated from it
      metrics.jsonl          one JSON object per logged step
      tensorboard/           TensorBoard event files
      summary.json           how the run ended, its final figures
      dataset/               the dataset's manifest.json and tokenizer.json (export needs no dataset)
      checkpoints/
        latest               names the newest complete checkpoint, e.g. "step_00000500"
        step_00000500/
          engine/            DeepSpeed's files: model and optimizer shards of every rank
          universal/         (made on demand) the same, in DeepSpeed's universal format, to resume at
                             another world size
          train_state.json   TrainState, loader state, why and at what world size it was written
          rng/rank_00000.pt  each rank's RNG states (dropout)
          memory/rank_00000.pt  (recurrent runs) each rank's lanes' Transformer-XL memory, by global lane
"""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
DEEPSPEED_FILE = "deepspeed.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SUMMARY_FILE = "summary.json"
DATASET_DIR = "dataset"
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
TRAIN_STATE_FILE = "train_state.json"
RNG_DIR = "rng"
MEMORY_DIR = "memory"
ENGINE_DIR = "engine"  # DeepSpeed's tag inside a checkpoint directory
UNIVERSAL_DIR = "universal"  # the same state in DeepSpeed's world-size-free universal format


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS_DIR


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / RNG_DIR / f"rank_{rank:05d}.pt"


def memory_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint / MEMORY_DIR / f"rank_{rank:05d}.pt"

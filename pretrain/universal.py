"""DeepSpeed's universal checkpoint format: the engine's state free of the world size, to resume on another."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pretrain.run_dir import ENGINE_DIR, UNIVERSAL_DIR


def convert_to_universal(checkpoint_dir: Path) -> Path:
    """Write `checkpoint_dir/universal` from `checkpoint_dir/engine` (once; atomically). Run on one rank."""
    final = checkpoint_dir / UNIVERSAL_DIR
    if final.is_dir():
        return final
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tmp = checkpoint_dir / (UNIVERSAL_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds_to_universal(argparse.Namespace(input_folder=str(checkpoint_dir / ENGINE_DIR), output_folder=str(tmp),
                                       num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                       strict=True, inject_missing_state=False))
    tmp.rename(final)
    return final

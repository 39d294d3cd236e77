"""What the command line and the launcher import: no library a command does not use. CI starts `graft` about a
hundred times (each `graft train`: the CLI and launcher, torchrun, every rank), and torch or aiohttp alone take
seconds to import on a busy machine."""

import json
import subprocess
import sys

from conftest import REPO_ROOT

TINY = REPO_ROOT / "configs" / "tiny.yaml"
REMOTE = {"aiohttp", "fsspec"}  # remote datasets only (data_pipeline.fetch)
TRAINING = {"deepspeed", "transformers", "accelerate"}  # the ranks' engine, export and import


def loaded_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `code` (in the repository root)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_help_and_slurm_watching_import_no_heavy_library(tmp_path):
    loaded = loaded_after(f"""
from launch.cli import main
for argv in (["--help"], ["prepare", "--help"], ["train", "--help"], ["slurm", "submit", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
for command in ("status", "logs", "cancel"):  # not submitted: a clear error, after the command's imports
    assert main(["slurm", command, {str(tmp_path)!r}]) == 2
""")
    assert sorted(loaded & ({"torch", "numpy", "tokenizers", "omegaconf"} | REMOTE | TRAINING)) == []


def test_launcher_and_rank_import_no_remote_or_engine_library(small_dataset, tmp_path):
    # The launcher's checks and run directory, for a local dataset, then the module each rank runs. torch is
    # still there: the run config's objectives import it (pretrain.objectives.losses and .heads).
    loaded = loaded_after(f"""
from launch.local import set_up_run
set_up_run({str(TINY)!r}, ["data.path={small_dataset}", "train.run_dir={tmp_path / 'run'}"], 2, False)
import launch.worker
""")
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert sorted(loaded & ({"tokenizers"} | REMOTE | TRAINING)) == []

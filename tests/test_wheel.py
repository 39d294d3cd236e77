"""Graft works from a wheel, not only from an editable checkout: the presets in configs/ and the SLURM batch
script in slurm/ ship inside the package."""

import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile

import pytest
import yaml

from conftest import REPO_ROOT

CODE = ("data_pipeline", "pretrain", "launch")


def listed_packages() -> list[str]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_listed_in_pyproject():
    folders = {str(p.parent.relative_to(REPO_ROOT)).replace(os.sep, ".")
               for top in CODE for p in (REPO_ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(folders - set(listed_packages()))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml, or they miss the wheel"


@pytest.mark.slow
def test_wheel_installs_and_resolves_presets_outside_the_repository(small_dataset, tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".venv-mds"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", tmp_path / "dist", source], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("graft-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in (REPO_ROOT / "configs").rglob("*.yaml")}
    assert {f"pretrain/configs/{p}" for p in presets} <= shipped
    assert "launch/slurm_templates/train.sbatch" in shipped

    # A fresh environment that borrows the dependencies installed here (no downloads), with the wheel on top.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
                    wheel], check=True, capture_output=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        result = subprocess.run([*map(str, args)], cwd=outside, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    where = run(python, "-c", "import pretrain.config as c; print(c.__file__); print(c.CONFIGS_DIR)").split()
    assert all(str(env_dir) in line for line in where), where  # the wheel's code and presets, not the checkout's
    assert "usage: graft quickstart" in run(env_dir / "bin" / "graft", "quickstart", "--help")
    layers = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())["model"]["num_layers"]
    assert f"num_layers: {layers}" in run(env_dir / "bin" / "graft", "config", "show", "configs/quickstart.yaml")
    assert "family: t5" in run(env_dir / "bin" / "graft", "config", "show", "models/t5-base")
    # The batch script `graft slurm submit` renders comes from the wheel too (the dry run needs no SLURM).
    script = run(env_dir / "bin" / "graft", "slurm", "submit", "configs/tiny.yaml", f"data.path={small_dataset}",
                 f"train.run_dir={outside / 'run'}", "--nodes", "2", "--procs-per-node", "2", "--dry-run")
    assert "#SBATCH --nodes=2" in script and "-m launch.slurm_node" in script and "PROCS_PER_NODE=2" in script

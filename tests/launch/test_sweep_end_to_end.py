"""A real sweep on CPU: a 3 x 2 grid of tiny BERTs on the sample corpus through `graft sweep` and `graft
scaling` (table, JSON, plots), plus a diverged and an unfinished run that the fit names and leaves out;
re-running the sweep trains nothing new."""

import json
import os

import pytest

from tests.conftest import REPO_ROOT, run_graft

SWEEP_TIMEOUT_S = 2400  # six trainings, each mostly start-up: ~3 min on 2 idle cores, far longer on a busy one
TINY = [str(REPO_ROOT / "configs" / "tiny.yaml"), "train.save_every=100", "engine.zero_stage=0"]


@pytest.mark.slow
def test_grid_sweep_then_scaling(small_dataset, heldout_dataset, tmp_path):
    data = [f"data.path={small_dataset}", f"train.eval_data={heldout_dataset}", "train.eval_batches=2"]
    sweep = tmp_path / "sweep"
    result = run_graft("sweep", *TINY, *data, "--grid", "model.hidden_size=16,32,48", "train.max_steps=3,6",
                       "--out", sweep, timeout=SWEEP_TIMEOUT_S)
    assert "6 trained, 0 resumed, 0 already finished" in result.stdout, result.stdout
    record = json.loads((sweep / "sweep.json").read_text())
    assert len(record["points"]) == 6 and all(p["flops_per_sample"] > 0 for p in record["points"])
    for point in record["points"]:
        summary = json.loads((sweep / "runs" / point["name"] / "summary.json").read_text())
        assert summary["stopped_by"] == "end" and summary["final_eval_loss"] > 0

    mtimes = {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/summary.json")}
    again = run_graft("sweep", *TINY, *data, "--grid", "model.hidden_size=16,32,48", "train.max_steps=3,6",
                      "--out", sweep)
    assert "0 trained, 0 resumed, 6 already finished" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("runs/*/summary.json")} == mtimes

    other = run_graft("sweep", *TINY, *data, "--grid", "model.hidden_size=16,64", "--out", sweep, check=False)
    assert other.returncode == 2 and "records another sweep" in other.stderr

    # A run that diverges (NaN losses until the trainer stops it) and one stopped before max_steps.
    diverged, unfinished = tmp_path / "diverged", tmp_path / "unfinished"
    run_graft("train", *TINY, *data, f"train.run_dir={diverged}", "train.debug_nan_steps=[1,2]",
              "train.max_nonfinite_in_a_row=2", check=False)
    run_graft("train", *TINY, *data, f"train.run_dir={unfinished}", "train.exit_at_step=2")
    out = tmp_path / "fit"
    fit = run_graft("scaling", sweep, diverged, unfinished, "--out", out, "--draws", "20")
    report = json.loads((out / "fits.json").read_text())
    reasons = {x["name"]: x["reason"] for x in report["left_out"]}
    assert reasons["diverged"].startswith("diverged (non-finite loss at step 1"), reasons
    assert reasons["unfinished"].startswith("not finished (step 2 of 6"), reasons
    assert report["runs"] == 6
    assert "kaplan_N" in report["fits"] and "approach3" in report["fits"]
    # A grid is no IsoFLOP sweep: every budget holds one size, which the report says instead of fitting it.
    assert "approach2" in report["not_fitted"] and len(report["one_size_budgets"]) == 6
    for name in ("scaling.md", "runs.csv", "loss_vs_compute.png", "isoflop.png", "optimal_allocation.png",
                 "residuals.png"):
        assert os.path.getsize(out / name) > 1000 or name == "runs.csv", name
    assert "left out diverged" in fit.stdout and "| alpha_N |" in (out / "scaling.md").read_text()


def test_slurm_backend_renders_one_array_and_says_when_sbatch_cannot_take_it(small_dataset, heldout_dataset,
                                                                              tmp_path):
    """No SLURM controller runs here (tests/slurm has the real cluster): the array's script is written into the
    first point's run directory, and the refusal (no sbatch, or no controller) is one clear error."""
    result = run_graft("sweep", *TINY, f"data.path={small_dataset}", f"train.eval_data={heldout_dataset}",
                       "--grid", "model.hidden_size=16,32", "--backend", "slurm", "--out", tmp_path / "s",
                       check=False)
    assert result.returncode == 2 and "sbatch" in result.stderr.splitlines()[-1], result.stderr
    script = (tmp_path / "s" / "runs").glob("*/train.sbatch")
    assert "--array=0-1" in next(script).read_text()


def test_sweep_needs_held_out_data(small_dataset, tmp_path):
    result = run_graft("sweep", *TINY, f"data.path={small_dataset}", "--grid", "model.hidden_size=16,32",
                       "--out", tmp_path / "s", check=False)
    assert result.returncode == 2 and "train.eval_data is not set" in result.stderr


def test_isoflop_plan_spends_each_budget(small_dataset, heldout_dataset, tmp_path):
    """Planning only (the budgets are too small to train): steps x batch x FLOPs per sample ~ the budget."""
    from launch.sweep_plan import isoflop_points, measure

    base = [f"data.path={small_dataset}", f"train.eval_data={heldout_dataset}"]
    points = isoflop_points([1e10, 1e11], ["bert-30k", "bert-100k", "bert-300k"])
    measure(TINY[0], base, points)
    for point in points:
        steps = int(point.overrides[-1].split("=")[1])
        spent = steps * 16 * point.flops_per_sample  # tiny.yaml's global batch
        assert abs(spent - point.budget) / point.budget < max(0.02, 1 / steps), (point.name, spent)
    assert len({p.name for p in points}) == 6

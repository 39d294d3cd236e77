"""The benchmarks are run by hand, rarely: each must at least start and explain itself, and bench/gpu.py, which
can only measure on a GPU (lent rarely and briefly), runs its `--smoke` mode (the same code on tiny models, on
CPU), so that a broken script is found here and not in the GPU session."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

BENCHMARKS = sorted(p.name for p in (REPO_ROOT / "bench").glob("*.py") if p.name not in ("__init__.py", "common.py",
                                                                                         "mds_side.py"))


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_explains_itself(script):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / script), "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage:" in out.stdout and "python" in out.stdout  # the docstring's command line


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_tiny_models():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "gpu.py"), "--smoke", "--steps", "2",
                          "--bert-batch", "2", "--t5-batch", "2"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(figures) == {"mfu_bert_base", "mfu_t5_base", "peak_memory_gb_bert_base", "peak_memory_gb_t5_base"}
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures


def test_last_layer_benchmark_reports_its_figures():
    out = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "last_layer.py"), "--steps", "1"], cwd=REPO_ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["last_layer_step_ratio"] > 0
    # 2 layers, 40% masked: the last layer's queries, output and feed-forward skipped at 60% of the positions
    assert 0.7 < figures["last_layer_flops_ratio"] < 0.9


def test_page_reporting_is_paused_while_timing_and_restored(tmp_path, monkeypatch):
    """bench.common.host_backed_memory, on a stand-in for the kernel's knob (a test must not change the VM)."""
    from bench import common

    orders = len(open("/proc/buddyinfo").readline().split()) - 4
    knob = tmp_path / "page_reporting_order"
    knob.write_text("9\n")
    monkeypatch.setattr(common, "PAGE_REPORTING_ORDER", knob)
    with common.host_backed_memory(1 << 20) as note:
        assert knob.read_text() == str(orders) and "paused" in note
    assert knob.read_text() == "9"
    with pytest.raises(RuntimeError), common.host_backed_memory(1 << 20):
        raise RuntimeError("a failed benchmark")
    assert knob.read_text() == "9"

    monkeypatch.setattr(common, "PAGE_REPORTING_ORDER", tmp_path / "absent")
    with common.host_backed_memory(1 << 20) as note:
        assert note == "no free page reporting on this machine"

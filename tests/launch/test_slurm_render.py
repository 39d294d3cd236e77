"""The rendered batch script and each node's torchrun options, for 1-64 nodes x 1-8 GPUs (no SLURM needed)."""

import re

import pytest

from conftest import REPO_ROOT, run_graft
from data_pipeline.errors import UserError
from launch.slurm_hosts import expand_hostlist, head_address
from launch.slurm_node import torchrun_args
from launch.slurm_script import SlurmOptions, render

TINY = REPO_ROOT / "configs" / "tiny.yaml"


def addresses(nodes: int) -> dict:
    return {f"gpu{i:03d}": f"10.0.{i // 256}.{i % 256}" for i in range(1, nodes + 1)}


def test_every_node_count_and_gpu_count(tmp_path):
    for nodes in range(1, 65):
        nodelist = f"gpu[001-{nodes:03d}]" if nodes > 1 else "gpu001"
        table = addresses(nodes)
        head, address = head_address(nodelist, table.__getitem__)
        assert head == "gpu001" and address == table["gpu001"]
        for gpus in range(1, 9):
            options = SlurmOptions(nodes=nodes, gpus_per_node=gpus)
            script = render([tmp_path / "run"], options, "/usr/bin/python3", "out-%j")
            assert f"#SBATCH --nodes={nodes}\n" in script and "#SBATCH --ntasks-per-node=1\n" in script
            assert f"#SBATCH --gpus-per-node={gpus}\n" in script
            assert f"PROCS_PER_NODE={gpus}\n" in script
            assert options.world_size == nodes * gpus
            for node_rank in {0, 1 % nodes, nodes - 1}:
                args = dict(a.lstrip("-").split("=", 1) for a in torchrun_args(nodes, gpus, address, 29500, "77",
                                                                             node_rank, 60))
                assert args["nnodes"] == str(nodes) and args["nproc_per_node"] == str(gpus)
                assert int(args["nnodes"]) * int(args["nproc_per_node"]) == nodes * gpus
                assert args["rdzv-endpoint"] == f"{table['gpu001']}:29500" and args["rdzv-backend"] == "c10d"
                assert f"is_host={int(node_rank == 0)}" in args["rdzv-conf"]


def test_script_has_the_options_that_make_a_job_survive(tmp_path):
    setup = tmp_path / "env.sh"
    setup.write_text("module load cuda\n")
    script = render([tmp_path / "run"], SlurmOptions(nodes=2, gpus_per_node=8, partition="gpu", account="lm",
                                                     time="24:00:00", exclusive=True, env_setup=str(setup),
                                                     max_requeues=5, sbatch_args=["--mem=0"]), "py", "o")
    for line in ("#SBATCH --signal=B:USR2@300", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lm", "#SBATCH --time=24:00:00", "#SBATCH --exclusive",
                 "#SBATCH --mem=0", "MAX_REQUEUES=5", f"source {setup}", "trap forward USR2", "scontrol requeue",
                 "NCCL_DEBUG", "OMP_NUM_THREADS"):
        assert line in script, line
    # sbatch reads #SBATCH lines only before the first command.
    first_command = re.search(r"^[^#\n]", script, re.M).start()
    assert script.rfind("#SBATCH", 0, len(script)) < first_command
    assert "{{" not in script


def test_array_script_lists_every_run_dir(tmp_path):
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    script = render(dirs, SlurmOptions(procs_per_node=1), "py", "o")
    assert "#SBATCH --array=0-2" in script and all(str(d) in script for d in dirs)


@pytest.mark.parametrize("kwargs, message", [
    ({"signal": "KILL", "gpus_per_node": 1}, "--signal"),
    ({"gpus_per_node": 0}, "--procs-per-node"),
    ({"nodes": 0, "gpus_per_node": 1}, "--nodes"),
    ({"gpus_per_node": 1, "env_setup": "/nonexistent.sh"}, "--env-setup"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(UserError, match=message):
        SlurmOptions(**kwargs)


def test_multi_node_head_on_loopback_is_refused():
    with pytest.raises(UserError, match="loopback"):
        head_address("n[1-2]", lambda host: "127.0.1.1")
    assert head_address("n1", lambda host: "127.0.0.1") == ("n1", "127.0.0.1")  # one node: fine


def test_hostlist_expansion():
    assert expand_hostlist("gpu[001-003,010],login1") == ["gpu001", "gpu002", "gpu003", "gpu010", "login1"]
    assert expand_hostlist("x[8-11]") == ["x8", "x9", "x10", "x11"]


def test_dry_run_prints_and_writes_nothing(small_dataset, tmp_path):
    result = run_graft("slurm", "submit", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r",
                       "--nodes", "4", "--gpus-per-node", "4", "--dry-run")
    assert "#SBATCH --nodes=4" in result.stdout and f"RUN_DIRS=({tmp_path}/r)" in result.stdout
    assert not (tmp_path / "r").exists()


def test_batch_that_does_not_divide_the_world_is_refused(small_dataset, tmp_path):
    result = run_graft("slurm", "submit", TINY, f"data.path={small_dataset}", f"train.run_dir={tmp_path}/r",
                       "--nodes", "3", "--gpus-per-node", "1", "--dry-run", check=False)
    assert result.returncode == 2 and "engine.global_batch_size" in result.stderr

"""ZeRO-3 model construction (deepspeed.zero.Init) on 2 real CPU processes: no rank ever holds the whole
model (every parameter a partition after construction; peak resident memory while building well under one
full copy), and the weights are bitwise those of a plain build with the same seed (so losses do not change); a unigram
output bias reaches every MLM head."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_zero3_construction_partitions_every_parameter_with_the_plain_weights(tmp_path):
    worker = Path(__file__).with_name("zero_init_worker.py")
    # A fixed mmap threshold makes glibc return every freed tensor to the system at once, so the resident set
    # measures live tensors (by default it keeps freed heap memory, fragmented by the partitions between them).
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DS_ACCELERATOR": "cpu", "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONPATH": str(REPO_ROOT)}  # the worker runs as a script: the repository is not on its path
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", str(worker), str(tmp_path)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:  # building: one rank's share plus one module at a time, never the whole model
        memory = report.pop("memory")
        assert memory["zero3_growth"] < 0.75 * memory["full"], memory
        assert memory["plain_growth"] > 0.95 * memory["full"], memory  # the measure sees a whole model
    for report in reports:  # model.output_bias_init=unigram's bias reaches every MLM head, partitioned
        assert report.pop("output_bias") == dict.fromkeys(["bert", "bert_pretraining", "roberta", "albert",
                                                           "albert_pretraining", "electra"], True)
    assert set(reports[0]) == {"bert", "bert_pretraining", "roberta", "albert", "albert_pretraining", "electra",
                               "t5", "bart"}
    for family in reports[0]:
        ranks = [r[family] for r in reports]
        for report in ranks:
            assert report["held"] == 0, family  # every parameter is an empty placeholder on every rank
            assert report["differ"] == [], family
            assert report["same_rng"], family
            for key, n in report["full"].items():
                assert report["local"][key] == math.ceil(n / 2), (family, key)
        # Tied weights (MLM decoder = word embedding, LM head = shared embedding) are one parameter:
        # the partitions cover the model exactly once.
        assert sum(ranks[0]["full"].values()) == ranks[0]["plain_params"], family
        assert sum(ranks[0]["local"].values()) < 0.51 * ranks[0]["plain_params"], family

"""What a sweep trains: its points (a grid of overrides, or IsoFLOP budgets x size presets), each point's
FLOPs per sample by Graft's own count, and the steps a compute budget buys.

A point is a name and the overrides that make its run config from the sweep's CONFIG. FLOPs per sample come
from `pretrain.flops.batch_flops` on a few real micro-batches of the run's own objective and data (the MLM
head runs on the masked positions only, T5's decoder on its targets), so a budget means what the trainer's
MFU means.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from data_pipeline.errors import UserError
from data_pipeline.loader import Loader
from data_pipeline.shards import Manifest
from launch.model_size import count_parameters
from pretrain.config import CONFIGS_DIR, RunConfig, load_config
from pretrain.flops import batch_flops
from pretrain.objectives import build_objective, reads_logits_only
from pretrain.objectives.base import CollatorContext

LADDER_DIR = CONFIGS_DIR / "scaling"
FLOPS_SAMPLE_BATCHES = 4  # micro-batches drawn to measure the head's share (masked positions vary by batch)
TOKENS_PER_PARAM = 20  # Chinchilla's compute-optimal ratio: the prior behind the edge-of-grid warning


@dataclass
class Point:
    name: str  # also the run directory's name under SWEEP_DIR/runs/
    overrides: list[str]  # applied after the sweep's own overrides
    budget: float | None = None  # the IsoFLOP budget this point spends (FLOPs), None in a grid sweep
    size: str | None = None  # the ladder preset, in an IsoFLOP sweep
    flops_per_sample: float = 0.0  # training FLOPs of one sample (filled in by `measure`)
    params: int = 0  # parameters, total
    non_embedding_params: int = 0
    notes: list[str] = field(default_factory=list)


def parse_grid(axes: list[str]) -> list[tuple[str, list[str]]]:
    """`["model.hidden_size=32,64", "optim.lr=1e-3"]` -> [(key, [values])]; an error names a malformed axis."""
    grid = []
    for axis in axes:
        key, eq, values = axis.partition("=")
        if not eq or not key or not values or any(not v for v in values.split(",")):
            raise UserError(f"--grid {axis!r}: expected KEY=V1,V2,... (e.g. model.hidden_size=64,128)")
        if key in (k for k, _ in grid):
            raise UserError(f"--grid names {key} twice; give all its values in one KEY=V1,V2,...")
        grid.append((key, values.split(",")))
    return grid


def grid_points(axes: list[str]) -> list[Point]:
    grid = parse_grid(axes)
    points = []
    for values in itertools.product(*(vals for _, vals in grid)):
        pairs = [(key, value) for (key, _), value in zip(grid, values, strict=True)]
        name = "-".join(f"{key.rsplit('.', 1)[-1]}_{value}" for key, value in pairs)
        points.append(Point(name, [f"{k}={v}" for k, v in pairs]))
    return points


def load_ladders(ladder_dir: Path = LADDER_DIR) -> dict[str, dict]:
    """preset name -> {"family", "non_embedding_params", "model": {...}} over every family's ladder file."""
    presets = {}
    for path in sorted(ladder_dir.glob("*.yaml")):
        ladder = OmegaConf.to_container(OmegaConf.load(path))
        for name, preset in ladder["presets"].items():
            presets[name] = {"family": ladder["family"], "file": path.name, **preset}
    return presets


def size_overrides(name: str, presets: dict[str, dict]) -> list[str]:
    if name not in presets:
        raise UserError(f"--sizes: no preset {name!r} in {LADDER_DIR}; known: {', '.join(presets)}")
    preset = presets[name]
    return [f"model.family={preset['family']}", *(f"model.{k}={v}" for k, v in preset["model"].items())]


def isoflop_points(budgets: list[float], sizes: list[str]) -> list[Point]:
    presets = load_ladders()
    return [Point(f"C{_short(c)}-{size}", size_overrides(size, presets), budget=c, size=size)
            for c in budgets for size in sizes]


def parse_budgets(text: str) -> list[float]:
    try:
        budgets = [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--isoflop {text!r}: expected FLOP budgets separated by commas, e.g. 1e15,3e15,1e16") \
            from None
    if any(c <= 0 for c in budgets) or len(set(budgets)) != len(budgets):
        raise UserError(f"--isoflop {text!r}: budgets must be positive and distinct")
    return sorted(budgets)


def point_config(config: str, base: list[str], point: Point) -> RunConfig:
    return load_config(config, [*base, *point.overrides, "train.run_dir=unused"])


def measure(config: str, base: list[str], points: list[Point]) -> None:
    """Fill in each point's FLOPs per sample and parameter counts; for IsoFLOP points, set the steps its budget
    buys (`train.max_steps`, appended to its overrides)."""
    batches: dict[tuple, list[dict]] = {}  # the data side of FLOPs depends on objective, data and batch only
    for point in points:
        cfg = point_config(config, base, point)
        key = (repr(cfg.data), repr(cfg.objective), cfg.engine.micro_batch_size, cfg.seed)
        if key not in batches:
            batches[key] = sample_batches(cfg)
        samples = sum(b["input_ids"].shape[0] for b in batches[key])
        point.flops_per_sample = batch_flops(cfg.model, batches[key], reads_logits_only(cfg.objective)) / samples
        counts = count_parameters(cfg.model)
        point.params, point.non_embedding_params = counts.total, counts.non_embedding
        if point.budget is not None:
            steps = max(1, round(point.budget / (point.flops_per_sample * cfg.engine.global_batch_size)))
            point.overrides = [*point.overrides, f"train.max_steps={steps}"]


def sample_batches(cfg: RunConfig) -> list[dict]:
    """A few micro-batches of the run's own collator on its own data (what the trainer would see first)."""
    context = CollatorContext(Manifest.load(cfg.data.path), cfg.data.seq_len, cfg.seed, cfg.data.path)
    collate, _ = build_objective(cfg.objective, context)
    data = dataclasses.replace(cfg.data, num_workers=0)
    batches = iter(Loader(data, collate.raw_length, collate, cfg.seed, 0, 1, cfg.engine.micro_batch_size))
    return [next(batches) for _ in range(FLOPS_SAMPLE_BATCHES)]


def edge_warnings(config: str, base: list[str], points: list[Point]) -> list[str]:
    """Per budget, where Chinchilla's ~20 tokens per parameter would put the optimum: a warning when it lies
    at or beyond the smallest or largest size (an off-centre IsoFLOP grid biases the fitted minimum)."""
    warnings = []
    for budget in sorted({p.budget for p in points if p.budget is not None}):
        row = sorted((p for p in points if p.budget == budget), key=lambda p: p.params)
        ratios = []
        for p in row:
            cfg = point_config(config, base, p)
            tokens = budget / p.flops_per_sample * cfg.data.seq_len
            ratios.append(tokens / p.params)
        if ratios[0] <= TOKENS_PER_PARAM:
            warnings.append(f"budget {_short(budget)}: even the smallest size ({row[0].size}) sees only "
                            f"{ratios[0]:.1f} tokens per parameter (Chinchilla's optimum is ~{TOKENS_PER_PARAM}); "
                            "the minimum is likely at or below the grid's lower edge: add smaller sizes")
        elif ratios[-1] >= TOKENS_PER_PARAM:
            warnings.append(f"budget {_short(budget)}: even the largest size ({row[-1].size}) sees "
                            f"{ratios[-1]:.0f} tokens per parameter (Chinchilla's optimum is ~{TOKENS_PER_PARAM}); "
                            "the minimum is likely at or above the grid's upper edge: add larger sizes")
    return warnings


def _short(c: float) -> str:
    return f"{c:.3g}".replace("+", "")

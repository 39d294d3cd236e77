"""The run config: one dataclass per component, composed; YAML presets plus `key=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_pipeline.errors import UserError
from data_pipeline.loader import DataConfig
from data_pipeline.shards import Manifest
from pretrain.engine_config import EngineConfig
from pretrain.models.config import ModelConfig
from pretrain.objectives import ObjectiveConfig, check_fits
from pretrain.optim import OptimConfig


@dataclass
class TrainConfig:
    run_dir: str = "???"  # everything the run writes goes here
    max_steps: int = 1000  # optimizer steps; the learning-rate schedule ends here
    exit_at_step: int | None = None  # stop early at this step (checkpointed), e.g. to fit a job's time limit
    log_every: int = 10  # steps between console lines and TensorBoard points
    save_every: int = 500  # steps between checkpoints (one is always written at the end)
    save_every_minutes: float = 0.0  # also checkpoint when this many minutes passed since the last one; 0: off
    keep_last: int = 2  # complete checkpoints kept; older ones are deleted
    eval_data: str | None = None  # a `graft prepare` directory of held-out text; no evaluation without it
    eval_every: int = 500  # steps between held-out evaluations (and one at the end)
    eval_batches: int = 8  # micro-batches per rank in each evaluation: the same ones every time
    max_nonfinite_in_a_row: int = 5  # stop the run after this many consecutive non-finite losses (each skipped)
    peak_tflops: float = 0.0  # accelerator peak for MFU; 0: look the GPU up (no MFU on CPU or unknown GPUs)
    debug_nan_steps: list[int] = field(default_factory=list)  # testing aid: rank 0's loss is NaN at these steps

    def __post_init__(self):
        for name in ("max_steps", "log_every", "save_every", "keep_last", "eval_every", "eval_batches",
                     "max_nonfinite_in_a_row"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.save_every_minutes < 0:
            raise UserError(f"train.save_every_minutes must be >= 0, got {self.save_every_minutes}")
        if self.exit_at_step is not None and self.exit_at_step <= 0:
            raise UserError(f"train.exit_at_step must be positive (or null), got {self.exit_at_step}")
        if self.eval_data is not None and not Path(self.eval_data).is_dir():
            raise UserError(f"train.eval_data: {self.eval_data} is not a directory; point it at the output of "
                            "`graft prepare` run on held-out text")


@dataclass
class RunConfig:
    seed: int = 0  # model init, data order and masking noise all derive from it
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check_fits(self.objective, self.model)  # e.g. span corruption cannot train a BERT
        if self.model.recurrence.mem_len and not self.data.lanes:
            raise UserError("model.recurrence.mem_len needs data.lanes=true: a memory is only meaningful when row "
                            "j of each batch continues row j of the previous one")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """The config from a YAML file (or the defaults) with `key=value` overrides applied, validated.

    `model.vocab_size`, unless set explicitly, is the size of the dataset's tokenizer.
    """
    where = str(path) if path else "the command line"
    try:
        user = OmegaConf.load(_existing(path)) if path else OmegaConf.create()
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"override {bad[0]!r} is not of the form key=value (e.g. train.max_steps=100)")
        user = OmegaConf.merge(user, OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), user)
        if OmegaConf.select(user, "model.vocab_size") is None and not OmegaConf.is_missing(merged.data, "path"):
            merged.model.vocab_size = Manifest.load(merged.data.path).vocab_size
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise UserError(f"{where}: required key {missing[0]} is not set; add it to the YAML or pass "
                            f"{missing[0]}=VALUE")
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(f"{where}: {_describe(exc)}") from None
    except ValueError as exc:  # a component's own check in __post_init__
        raise UserError(f"{where}: {exc}") from None
    return cfg


def check_special_ids(cfg: RunConfig) -> None:
    """The model's special ids must be the dataset tokenizer's: a RoBERTa preset (pad 1) on WordPiece data
    (pad 0) would otherwise train with the wrong padding index and export a model that disagrees with its
    tokenizer."""
    manifest = Manifest.load(cfg.data.path)
    for role in ("pad", "bos", "eos"):
        want, have = manifest.special_tokens.get(role), getattr(cfg.model, f"{role}_token_id")
        if want is not None and have is not None and want != have:
            raise UserError(f"model.{role}_token_id is {have} but the tokenizer of {cfg.data.path} has id {want} "
                            f"for its {role} token; use a preset of the tokenizer's family, or set "
                            f"model.{role}_token_id={want}")


def _existing(path) -> str:
    if not Path(path).is_file():
        raise UserError(f"config file {path} does not exist (presets live in configs/, e.g. configs/quickstart.yaml)")
    return str(path)


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    first_line = str(exc).splitlines()[0]
    if type(exc).__name__ == "ConfigKeyError" and key:
        return f"unknown key {key!r}; check its spelling against the config reference in README.md"
    return f"key {key!r}: {first_line}" if key else first_line


def save_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """`key: old -> new` for every leaf that differs."""
    a = _flatten(OmegaConf.to_container(OmegaConf.structured(old)))
    b = _flatten(OmegaConf.to_container(OmegaConf.structured(new)))
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

"""The run config: one dataclass per component, composed; YAML presets plus `key=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from data_pipeline.errors import UserError
from data_pipeline.loader import DataConfig
from data_pipeline.shards import Manifest
from pretrain.curriculum import CurriculumConfig
from pretrain.engine_config import EngineConfig
from pretrain.failures import FaultConfig
from pretrain.models.config import ModelConfig
from pretrain.objectives import ObjectiveConfig, check_fits
from pretrain.optim import OptimConfig

# The presets: inside the installed package (pyproject.toml ships configs/ as pretrain/configs), or in a checkout.
_HERE = Path(__file__).resolve().parent
CONFIGS_DIR = _HERE / "configs" if (_HERE / "configs").is_dir() else _HERE.parent / "configs"
RECIPES_DIR = CONFIGS_DIR / "recipes"
# What a recipe may set: how the model trains, never what it computes, so the export stays an ordinary
# transformers class of its family.
RECIPE_SECTIONS = ("optim", "curriculum")
RECIPE_KEYS = ("objective.mlm.mask_prob", "objective.mlm.replace_with_mask", "objective.mlm.replace_with_random",
               "model.hidden_dropout", "model.attention_dropout", "model.initializer_range", "model.output_bias_init",
               "engine.grad_clip", "engine.global_batch_size")


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
    hang_timeout_minutes: float = 30.0  # no step in this time: every rank writes its stacks to hang/, exits 75; 0 off
    debug_fault: FaultConfig = field(default_factory=FaultConfig)  # testing aid: fail the run on purpose

    def __post_init__(self):
        for name in ("max_steps", "log_every", "save_every", "keep_last", "eval_every", "eval_batches",
                     "max_nonfinite_in_a_row"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.hang_timeout_minutes < 0:
            raise UserError(f"train.hang_timeout_minutes must be >= 0 (0 turns the watchdog off), got "
                            f"{self.hang_timeout_minutes}")
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
    recipe: str | None = None  # a training recipe, configs/recipes/NAME.yaml; this config's own keys win over it
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    def __post_init__(self):
        check_fits(self.objective, self.model)  # e.g. span corruption cannot train a BERT
        self.curriculum.check(self.engine.global_batch_size, self.data.seq_len, self.objective.name,
                              self.data.lanes)
        if self.model.recurrence.mem_len and not self.data.lanes:
            raise UserError("model.recurrence.mem_len needs data.lanes=true: a memory is only meaningful when row "
                            "j of each batch continues row j of the previous one")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """The config from a YAML file (or the defaults) with `key=value` overrides applied, validated.

    `model.vocab_size`, unless set explicitly, is the size of the dataset's tokenizer.
    """
    cfg, missing = _resolve(path, overrides)
    if missing:
        raise UserError(f"{_where(path)}: required key {missing[0]} is not set; add it to the YAML or pass "
                        f"{missing[0]}=VALUE")
    return cfg


def show_config(path: str | Path | None, overrides: list[str] = ()) -> tuple[str, list[str]]:
    """The resolved config as YAML, as `graft train` would run it, and the required keys still unset (shown as
    ???; the components' own checks run once they are set). Starts nothing and writes nothing."""
    cfg, missing = _resolve(path, overrides)
    return OmegaConf.to_yaml(cfg if missing else OmegaConf.structured(cfg)), missing


def _resolve(path, overrides):
    """(validated RunConfig, []) or, while required keys are unset, (the merged OmegaConf tree, those keys)."""
    try:
        user = OmegaConf.load(resolve_config_path(path)) if path else OmegaConf.create()
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"override {bad[0]!r} is not of the form key=value (e.g. train.max_steps=100)")
        user = OmegaConf.merge(user, OmegaConf.from_dotlist(list(overrides)))
        recipe = OmegaConf.select(user, "recipe")
        if recipe:
            user = OmegaConf.merge(load_recipe(recipe), user)
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), user)
        if OmegaConf.select(user, "model.vocab_size") is None and not OmegaConf.is_missing(merged.data, "path"):
            remote = OmegaConf.to_object(merged.data.remote)  # its retries and timeouts, for a URL data.path
            merged.model.vocab_size = Manifest.load(merged.data.path, remote).vocab_size
        missing = sorted(OmegaConf.missing_keys(merged))
        return (merged, missing) if missing else (OmegaConf.to_object(merged), [])
    except OmegaConfBaseException as exc:
        raise UserError(f"{_where(path)}: {_describe(exc)}") from None
    except ValueError as exc:  # a component's own check in __post_init__
        raise UserError(f"{_where(path)}: {exc}") from None


def _where(path) -> str:
    return str(path) if path else "the command line"


def resolve_config_path(path: str | Path) -> Path:
    """A config file as given, or else the shipped preset of that name: `configs/quickstart.yaml`,
    `quickstart.yaml` and `quickstart` all find the quickstart preset from any directory, also from a wheel."""
    given = Path(path)
    if given.is_file():
        return given
    name = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    for candidate in (CONFIGS_DIR.joinpath(*name), CONFIGS_DIR.joinpath(*name).with_suffix(".yaml")):
        if name and not given.is_absolute() and candidate.is_file():
            return candidate
    raise UserError(f"config file {path} does not exist (presets live in {CONFIGS_DIR}, e.g. "
                    "configs/quickstart.yaml or configs/models/bert-base.yaml)")


def load_recipe(name: str):
    """configs/recipes/NAME.yaml, refused if it sets anything beyond RECIPE_SECTIONS and RECIPE_KEYS."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"recipe={name}: there is no {path}; the recipes are: {known}")
    recipe = OmegaConf.load(path)
    for key in _flatten(OmegaConf.to_container(recipe)):
        if key.split(".")[0] not in RECIPE_SECTIONS and key not in RECIPE_KEYS:
            raise UserError(f"{path}: a recipe may not set {key} (only {', '.join(RECIPE_SECTIONS)}.* and "
                            f"{', '.join(RECIPE_KEYS)}): the exported model must stay a standard one")
    return recipe


def check_special_ids(cfg: RunConfig) -> None:
    """The model's special ids must be the dataset tokenizer's: a RoBERTa preset (pad 1) on WordPiece data
    (pad 0) would otherwise train with the wrong padding index and export a model that disagrees with its
    tokenizer."""
    manifest = Manifest.load(cfg.data.path, cfg.data.remote)
    for role in ("pad", "bos", "eos"):
        want, have = manifest.special_tokens.get(role), getattr(cfg.model, f"{role}_token_id")
        if want is not None and have is not None and want != have:
            raise UserError(f"model.{role}_token_id is {have} but the tokenizer of {cfg.data.path} has id {want} "
                            f"for its {role} token; use a preset of the tokenizer's family, or set "
                            f"model.{role}_token_id={want}")


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    first_line = str(exc).splitlines()[0]
    if type(exc).__name__ == "ConfigKeyError" and key:
        return f"unknown key {key!r}; check its spelling with `graft config keys` (or docs/config.md)"
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

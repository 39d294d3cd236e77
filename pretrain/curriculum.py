"""A batch-size ramp and a sequence-length curriculum, both pure functions of the optimizer step.

Neither touches the sample order: the ramp only changes how many of the loader's micro-batch groups one step
consumes, and the curriculum cuts each loaded row into shorter rows. So a resumed run (whose step is in its
checkpoint) continues exactly, and the order stays the loader's, independent of the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.errors import UserError

SPLITTABLE_OBJECTIVES = ("mlm", "rtd")  # per-token objectives: a row cut in pieces is still a valid batch


@dataclass
class CurriculumConfig:
    # Global batch at step 0; it grows in multiples of itself to engine.global_batch_size. 0: no ramp.
    batch_start: int = 0
    batch_ramp_steps: int = 0  # steps after which the batch is engine.global_batch_size
    # Tokens per row at step 0 (data.seq_len divided by a power of 2); doubles in equal stages. 0: off.
    seq_len_start: int = 0
    seq_len_steps: int = 0  # steps after which rows are data.seq_len long

    def check(self, global_batch: int, seq_len: int, objective: str, lanes: bool = False) -> None:
        """Checks against the engine's batch, the data's row length, the objective and data.lanes (the run
        config's). The batch ramp works with lanes (every micro-batch still holds one row per lane, each
        continuing the lane's previous segment; a step only takes fewer of them); the sequence curriculum
        does not."""
        if self.batch_start:
            if not 0 < self.batch_start <= global_batch or global_batch % self.batch_start:
                raise UserError(f"curriculum.batch_start ({self.batch_start}) must divide engine.global_batch_size "
                                f"({global_batch}); the ramp grows in multiples of it")
            if self.batch_ramp_steps <= 0:
                raise UserError("curriculum.batch_ramp_steps must be positive when curriculum.batch_start is set")
        if self.seq_len_start:
            ratio = seq_len // self.seq_len_start
            if seq_len % self.seq_len_start or ratio & (ratio - 1):
                raise UserError(f"curriculum.seq_len_start ({self.seq_len_start}) must be data.seq_len ({seq_len}) "
                                "divided by a power of 2, e.g. a half or a quarter of it")
            if self.seq_len_steps <= 0:
                raise UserError("curriculum.seq_len_steps must be positive when curriculum.seq_len_start is set")
            if lanes:
                raise UserError("curriculum.seq_len_start cannot be used with data.lanes=true: the curriculum cuts "
                                "each row into shorter rows, while a recurrence lane is one row of data.seq_len "
                                "tokens continuing the lane's previous row (Transformer-XL memory needs both); set "
                                "curriculum.seq_len_start=0, or data.lanes=false and model.recurrence.mem_len=0")
            if objective not in SPLITTABLE_OBJECTIVES:
                raise UserError(f"curriculum.seq_len_start works with objective.name "
                                f"{' or '.join(SPLITTABLE_OBJECTIVES)}, not {objective}; set it to 0")


def batch_size_at(step: int, cfg: CurriculumConfig, global_batch: int) -> int:
    """The global batch of optimizer step `step` (0-based): batch_start x (1 + stage), the stages equally long,
    reaching `global_batch` at (ratio - 1) / ratio of batch_ramp_steps."""
    if not cfg.batch_start or step >= cfg.batch_ramp_steps:
        return global_batch
    ratio = global_batch // cfg.batch_start
    return cfg.batch_start * (1 + min(ratio - 1, ratio * step // cfg.batch_ramp_steps))


def seq_len_at(step: int, cfg: CurriculumConfig, seq_len: int) -> int:
    """The row length of optimizer step `step`: seq_len_start, doubling in equal stages up to `seq_len`."""
    if not cfg.seq_len_start or step >= cfg.seq_len_steps:
        return seq_len
    doublings = (seq_len // cfg.seq_len_start).bit_length() - 1
    stage = (doublings + 1) * step // cfg.seq_len_steps
    return cfg.seq_len_start << min(doublings, stage)


def shorten(batch: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Each [B, T] row cut into T / length rows of `length` tokens: the same tokens, masks and labels, shorter
    attention. Positions restart at 0 in every piece (the longer ones are learnt once rows are full length)."""
    rows, full = batch["input_ids"].shape
    if length >= full:  # no cut: also batches narrower than data.seq_len (BART's trimmed encoder input)
        return batch
    assert all(v.shape == (rows, full) for v in batch.values()), "only per-token [B, T] batches can be cut"
    return {k: v.reshape(rows * full // length, length) for k, v in batch.items()}

"""Kept for imports from the walking skeleton; the loss heads live in `losses`."""

from pretrain.objectives.losses import mlm_loss  # noqa: F401

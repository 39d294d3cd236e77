"""The configuration of a Graft model exported with its own modeling code: Graft's `ModelConfig` fields."""

from transformers import PretrainedConfig


class GraftConfig(PretrainedConfig):
    model_type = "graft"

    def __init__(self, graft: dict | None = None, **kwargs):
        self.graft = graft or {}  # the `model:` block of the Graft run that trained it
        super().__init__(**kwargs)

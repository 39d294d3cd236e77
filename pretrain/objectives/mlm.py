"""The MLM loss head: cross-entropy over the labelled positions only."""

import torch
import torch.nn.functional as F

from data_pipeline.collators.mlm import IGNORE


def mlm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = batch["labels"]
    positions = labels != IGNORE
    logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask"), positions=positions)
    return F.cross_entropy(logits.float(), labels[positions])

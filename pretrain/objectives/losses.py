"""Loss heads. Each calls the model through its forward (so ZeRO-3's hooks gather the weights) and asks
it only for the logits the loss needs."""

import torch
import torch.nn.functional as F

from data_pipeline.collators.mlm import IGNORE


def mlm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over the labelled positions only (the vocabulary projection runs only there)."""
    labels = batch["labels"]
    positions = labels != IGNORE
    logits = model({**batch, "positions": positions}).logits
    return F.cross_entropy(logits.float(), labels[positions])


def mlm_pair_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], task: str = "pair",
                  pair_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """MLM plus `pair_weight` x NSP/SOP (BERT's and ALBERT's pretraining sum them, weight 1); both terms are
    returned beside the total, so the trainer logs them as loss/mlm and loss/TASK."""
    labels = batch["labels"]
    positions = labels != IGNORE
    out = model({**batch, "positions": positions})
    mlm = F.cross_entropy(out.logits.float(), labels[positions])
    pair = F.cross_entropy(out.pair_logits.float(), batch["pair_labels"])
    return {"loss": mlm + pair_weight * pair, "mlm": mlm.detach(), task: pair.detach()}


def replaced_token_detection_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                                  discriminator_weight: float = 50.0) -> torch.Tensor:
    """ELECTRA: the generator's MLM loss + weight x the discriminator's per-token replaced/original loss.

    The generator's samples (no gradient through them, as in ELECTRA) replace the masked tokens; a sample
    equal to the original counts as original.
    """
    input_ids, labels, attention_mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
    positions = labels != IGNORE
    gen_logits = model({**batch, "positions": positions, "task": "generator"}).logits
    gen_loss = F.cross_entropy(gen_logits.float(), labels[positions])
    with torch.no_grad():
        sampled = torch.multinomial(F.softmax(gen_logits.float(), dim=-1), 1).squeeze(-1)
        corrupted = input_ids.clone()
        corrupted[positions] = sampled
        original = torch.where(positions, labels, input_ids)
        replaced = (corrupted != original).float()
    disc_logits = model({**batch, "input_ids": corrupted, "task": "discriminator"}).logits
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(replaced, dtype=torch.bool)
    disc_loss = F.binary_cross_entropy_with_logits(disc_logits.float()[real], replaced[real])
    return gen_loss + discriminator_weight * disc_loss


def seq2seq_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Encoder-decoder cross-entropy over the labelled decoder positions (T5 span corruption, BART infilling)."""
    labels = batch["labels"]
    positions = labels != IGNORE
    logits = model({**batch, "positions": positions}).logits
    return F.cross_entropy(logits.float(), labels[positions])


def permuted_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """XLNet: cross-entropy of the query stream's predictions at each row's targets (`target_mapping` [B, P, T],
    labels [B, P] in the targets' row order; IGNORE pads rows with fewer targets)."""
    positions = batch["target_mapping"].sum(1) > 0
    labels = batch["labels"]
    logits = model({**batch, "positions": positions}).logits
    return F.cross_entropy(logits.float(), labels[labels != IGNORE])

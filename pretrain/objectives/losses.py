"""Loss heads. Each calls the model through its forward (so ZeRO-3's hooks gather the weights) and asks
it only for the logits the loss needs."""

import torch
import torch.nn.functional as F

from data_pipeline.collators.mlm import IGNORE
from pretrain.objectives.heads import sbo_targets


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


def _mean_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the targets; 0 (with a graph) when there are none."""
    return F.cross_entropy(logits.float(), targets, reduction="sum") / max(1, targets.numel())


def mlm_sbo_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], sbo_weight: float = 1.0
                 ) -> dict[str, torch.Tensor]:
    """SpanBERT: MLM plus `sbo_weight` x the span-boundary objective (each masked span token predicted from the
    span's boundary outputs and its place: the `sbo` head); logged as loss/mlm and loss/sbo."""
    labels = batch["labels"]
    positions = labels != IGNORE
    out = model({**batch, "positions": positions})
    mlm = F.cross_entropy(out.logits.float(), labels[positions])
    sbo = _mean_ce(out.heads["sbo"], labels[sbo_targets(batch)])
    return {"loss": mlm + sbo_weight * sbo, "mlm": mlm.detach(), "sbo": sbo.detach()}


def structbert_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], word_weight: float = 1.0,
                    sentence_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """StructBERT: MLM + word_weight x the word-structural term (the original token at each shuffled trigram
    position, through the MLM head) + sentence_weight x the 3-way sentence-structural term (the `sentence`
    head); logged as loss/mlm, loss/word_structure, loss/sentence_structure."""
    labels, structural = batch["labels"], batch["structural_labels"]
    positions = (labels != IGNORE) | (structural != IGNORE)
    out = model({**batch, "positions": positions})
    masked, shuffled = labels[positions], structural[positions]
    is_mlm = masked != IGNORE
    mlm = _mean_ce(out.logits[is_mlm], masked[is_mlm])
    word = _mean_ce(out.logits[~is_mlm], shuffled[~is_mlm])
    sentence = F.cross_entropy(out.heads["sentence"].float(), batch["sentence_labels"])
    return {"loss": mlm + word_weight * word + sentence_weight * sentence, "mlm": mlm.detach(),
            "word_structure": word.detach(), "sentence_structure": sentence.detach()}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] -> [B, H]: the mean over the unpadded tokens (DeCLUTR's and Sentence-BERT's pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i's positive is positives[i], every other row a negative; cosine
    similarity over `temperature`."""
    sims = F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T / temperature
    return F.cross_entropy(sims, torch.arange(len(sims), device=sims.device))


def mlm_contrastive_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], weight: float = 1.0,
                         temperature: float = 0.05) -> dict[str, torch.Tensor]:
    """DeCLUTR: MLM on the (masked) anchors + weight x InfoNCE between the mean-pooled anchors and positives of
    the micro-batch; logged as loss/mlm and loss/contrastive."""
    labels = batch["labels"]
    positions = labels != IGNORE
    anchor = model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                    "positions": positions})
    positive = model({"input_ids": batch["positive_ids"], "attention_mask": batch["positive_mask"],
                      "positions": torch.zeros_like(positions)})  # no vocabulary projection for the positives
    mlm = F.cross_entropy(anchor.logits.float(), labels[positions])
    nce = info_nce(mean_pool(anchor.hidden, batch["attention_mask"]),
                   mean_pool(positive.hidden, batch["positive_mask"]), temperature)
    return {"loss": mlm + weight * nce, "mlm": mlm.detach(), "contrastive": nce.detach()}


def permuted_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """XLNet: cross-entropy of the query stream's predictions at each row's targets (`target_mapping` [B, P, T],
    labels [B, P] in the targets' row order; IGNORE pads rows with fewer targets)."""
    positions = batch["target_mapping"].sum(1) > 0
    labels = batch["labels"]
    logits = model({**batch, "positions": positions}).logits
    return F.cross_entropy(logits.float(), labels[labels != IGNORE])

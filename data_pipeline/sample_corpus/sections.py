"""A downstream task on the sample corpus: which part of the Python documentation a section comes from.

Each document of python_docs.jsonl is one section of a page (`source`, e.g. `library/json.rst`); its label is
the page's part of the documentation, one of the four largest (PARTS). Whole pages go to one side of the split,
so no page has sections in both train and test. The split is a function of the page names alone.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import torch

from data_pipeline.sample_corpus import SAMPLE_CORPUS

PARTS = ("whatsnew", "library", "howto", "c-api")  # 320, 288, 160 and 157 sections


def section_classification(corpus: Path = SAMPLE_CORPUS, test_share: float = 0.25
                           ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, test): lists of (text, label), label = index of the document's part in PARTS."""
    train, test = [], []
    with open(corpus) as f:
        for line in f:
            record = json.loads(line)
            part = record["source"].split("/")[0]
            if part not in PARTS:
                continue
            side = test if _page_hash(record["source"]) < test_share else train
            side.append((record["text"], PARTS.index(part)))
    return train, test


def majority_baseline(train: list[tuple[str, int]], test: list[tuple[str, int]]) -> float:
    """Test accuracy of always answering the most frequent label of `train`."""
    label = Counter(label for _, label in train).most_common(1)[0][0]
    return sum(y == label for _, y in test) / len(test)


def fine_tune_accuracy(model, tokenizer, train: list[tuple[str, int]], test: list[tuple[str, int]], *, steps: int,
                       lr: float, batch_size: int = 32, max_length: int = 64, seed: int = 0) -> float:
    """Fine-tune a transformers sequence classifier (`model`, with `tokenizer`) for `steps` AdamW steps on
    shuffled batches of `train` (each text's first `max_length` tokens); its accuracy on `test`."""
    generator = torch.Generator().manual_seed(seed)

    def encode(examples):
        batch = tokenizer([text for text, _ in examples], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt")
        return batch, torch.tensor([label for _, label in examples])

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    torch.manual_seed(seed)  # dropout
    position, order = len(train), None
    for _ in range(steps):
        if position + batch_size > len(train):  # a new epoch, in a new order
            order, position = torch.randperm(len(train), generator=generator), 0
        inputs, labels = encode([train[i] for i in order[position:position + batch_size]])
        position += batch_size
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            inputs, labels = encode(test[start:start + batch_size])
            correct += (model(**inputs).logits.argmax(-1) == labels).sum().item()
    return correct / len(test)


def _page_hash(source: str) -> float:
    """A page's place in [0, 1), stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little") / 2**64

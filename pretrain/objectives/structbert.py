"""StructBERT: MLM + the word-structural objective (shuffled trigrams put back in order, predicted through the
MLM head at the shuffled positions) + the three-way sentence-structural task (B next, previous or random, a
pretraining-only pooler and classifier). Options in `objective.structbert` (shuffle_prob, word_weight), the
sentence term's weight in `objective.pair.weight`, masking in `objective.mlm`."""

from functools import partial

from data_pipeline.collators.structbert import StructBERTCollator, StructBERTConfig  # noqa: F401  (its block)
from pretrain.objectives.base import Objective, require_mask_token
from pretrain.objectives.heads import SentenceHead
from pretrain.objectives.losses import structbert_loss

SENTENCE_CLASSES = 3  # next, previous, random


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    m = ctx.manifest
    return StructBERTCollator(cfg.structbert, cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


def loss(cfg):
    return partial(structbert_loss, word_weight=cfg.structbert.word_weight, sentence_weight=cfg.pair.weight)


def heads(cfg, model):
    return {"sentence": SentenceHead(model.config, SENTENCE_CLASSES)}


OBJECTIVE = Objective("structbert", make_collator, loss, needs=frozenset({"encoder", "mlm_head", "token_types"}),
                      data="any (format 2: cut at a sentence)", heads=heads,
                      description="StructBERT: MLM + shuffled trigrams put back + next/previous/random sentence")

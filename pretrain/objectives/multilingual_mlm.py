"""XLM's MLM on monolingual text of several languages in one run: BERT's masking (options in `objective.mlm`),
each token's language as its token type, so model.type_vocab_size must cover the dataset's languages (data
prepared with `graft prepare DOCS.jsonl --language-field LANG`)."""

from data_pipeline.collators.tlm import MultilingualMLMCollator
from pretrain.objectives.base import Objective, require_language_types, require_mask_token
from pretrain.objectives.losses import mlm_loss


def make_collator(cfg, ctx):
    require_mask_token(cfg.name, ctx.manifest)
    require_language_types(cfg.name, ctx.manifest, ctx.type_vocab_size)
    m = ctx.manifest
    return MultilingualMLMCollator(cfg.mlm, m.special_tokens, m.vocab_size, ctx.seq_len, ctx.seed)


OBJECTIVE = Objective("multilingual_mlm", make_collator, lambda cfg: mlm_loss,
                      needs=frozenset({"encoder", "mlm_head", "token_types"}),
                      data="languages (--language-field)",
                      logits_only=True,
                      description="XLM's MLM over several languages, a language id per token as its token type")

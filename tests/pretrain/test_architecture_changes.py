"""What counts as another model when a run resumes or exports: every field that changes the function the
weights compute, not the ones that only change training."""

from dataclasses import asdict, replace

from pretrain.models.config import ModelConfig, architecture_changes

BERT = ModelConfig(family="bert", vocab_size=1000, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)


def test_same_shaped_relabelling_and_size_changes_are_reported():
    trained = asdict(BERT)
    assert architecture_changes(trained, replace(BERT, family="roberta")) == ["model.family: 'bert' -> 'roberta'"]
    assert architecture_changes(trained, replace(BERT, layer_norm_eps=1e-5, num_layers=3)) == \
        ["model.num_layers: 2 -> 3", "model.layer_norm_eps: 1e-12 -> 1e-05"]


def test_training_only_fields_may_change():
    changed = replace(BERT, hidden_dropout=0.0, attention_dropout=0.0, layerdrop=0.2, activation_checkpointing=True,
                      init_from="/somewhere/else")
    assert architecture_changes(asdict(BERT), changed) == []


def test_fields_a_recorded_config_does_not_have_are_not_compared():
    trained = asdict(BERT)
    del trained["pre_ln"]  # a checkpoint written before the field existed
    assert architecture_changes(trained, replace(BERT, pre_ln=True)) == []

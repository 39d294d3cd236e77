"""UniLM's per-sample masks reach SDPA through the encoder: no position's output has a gradient with respect to
an input its mode forbids, compared element by element with a mask built by brute force."""

import torch

from pretrain.models import build_model
from pretrain.models.config import ModelConfig


def brute_force(mode: int, length: int, source: int) -> torch.Tensor:
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            if mode == 0:
                allowed[i, j] = True
            elif mode == 2:
                allowed[i, j] = j <= i
            elif mode == 3:
                allowed[i, j] = j >= i
            else:  # seq2seq: everyone sees the source; a target sees the targets up to itself
                allowed[i, j] = j < source or (i >= source and j <= i)
    return allowed


def test_unilm_masks_let_no_position_see_what_its_mode_forbids():
    from data_pipeline.collators.unilm import unilm_mask

    torch.manual_seed(0)
    length, source = 9, 4
    model = build_model(ModelConfig(family="bert", vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                    intermediate_size=32, max_position_embeddings=16, hidden_dropout=0.0,
                                    attention_dropout=0.0)).eval()
    modes = [0, 1, 2, 3]
    masks = torch.stack([torch.from_numpy(unilm_mask(m, length, source)) for m in modes])
    x = torch.randn(len(modes), length, 16, requires_grad=True)
    hidden = model.encoder(x, masks)
    probe = torch.randn(16)  # not .sum(): a post-LN output sums to a constant
    for row, mode in enumerate(modes):
        expected = brute_force(mode, length, source)
        assert torch.equal(masks[row], expected)
        for i in range(length):
            (grad,) = torch.autograd.grad((hidden[row, i] * probe).sum(), x, retain_graph=True)
            sees = grad[row].abs().sum(-1) > 0
            assert torch.equal(sees, expected[i]), (mode, i, sees, expected[i])
            assert grad[torch.arange(len(modes)) != row].abs().sum() == 0  # rows never see each other

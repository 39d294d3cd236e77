"""Export's check uses one intra-op thread on a busy machine only, and gives the configured number back."""

import torch

from pretrain import export


def test_one_thread_on_a_busy_machine_and_the_configured_number_after(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(export.os, "cpu_count", lambda: 2)
        monkeypatch.setattr(export.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
        with export._threads_for_the_check():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(export.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
        with export._threads_for_the_check():
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

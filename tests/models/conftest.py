"""Fixtures of the engine's tests (no Qt here)."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Small matrix products on one torch thread, as the labs' trainer children run them. On two cores a second
    intra-op thread stalls whenever anything else runs: the ntk lab's edge-of-stability run took 4.5 s with one
    thread and 193 s with two next to another busy process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

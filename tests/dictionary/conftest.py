"""Fixtures for the dictionary tests (tiny: d_in 16, d_sae 64, a few hundred rows)."""

from __future__ import annotations

import pytest
import torch
from dictionary_support import planted, random_sae

from steerlang.dictionary.sae import SAE


@pytest.fixture
def acts() -> torch.Tensor:
    return planted()


@pytest.fixture(params=["topk", "relu", "jumprelu"])
def any_sae(request: pytest.FixtureRequest) -> SAE:
    return random_sae(request.param)

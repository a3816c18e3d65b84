"""Shared fixtures: seeded, CPU, no network."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # the language tests need no numpy
        pass
    import sys

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(0)

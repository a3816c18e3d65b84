from __future__ import annotations

import numpy as np

from steerlang.dictionary.name import (
    LatentEvidence,
    TfidfNamer,
    balanced_accuracy,
    detection_score,
    logit_lens,
    top_samples,
)

KINDS = ["cat", "dog", "sun", "tree"]


def _planted(n: int = 300, seed: int = 0):
    """Scenes with random kinds; latent j fires exactly on scenes that contain KINDS[j]."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(KINDS))) < 0.35
    present[present.sum(1) == 0, 0] = True
    texts = [" and ".join(f"a {k}" for k, p in zip(KINDS, row, strict=True) if p) + " ." for row in present]
    pooled = present * rng.uniform(1, 3, present.shape)
    return texts, pooled, present


def test_naming_recovers_planted_names() -> None:
    texts, pooled, _ = _planted()
    namer = TfidfNamer(texts)
    held_texts, held_pooled, _ = _planted(seed=1)
    for j, kind in enumerate(KINDS):
        top = top_samples(pooled, j)
        cand = namer.propose(LatentEvidence(j, "image", top, [texts[i] for i in top]))
        assert cand is not None and cand.name == kind
        assert detection_score(held_pooled[:, j] > 0, held_texts, cand.name) == 1.0


def test_balanced_accuracy() -> None:
    assert balanced_accuracy(np.array([1, 0, 1, 0]), np.array([1, 0, 0, 0])) == (1 + 2 / 3) / 2
    assert balanced_accuracy(np.array([1, 1]), np.array([1, 1])) == 0.75


def test_logit_lens_finds_the_planted_token() -> None:
    unembed = np.eye(4, 6)
    top = logit_lens(np.array([0, 0, 3.0, 0, 0, 0]), unembed, ["a", "b", "cat", "d"], top=2)
    assert top[0][0] == "cat"

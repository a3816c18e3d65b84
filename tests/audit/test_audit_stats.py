"""The audit's statistics and ranking, on hand-made numbers (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steerlang.audit import stats
from steerlang.audit.filter import kept_rows
from steerlang.audit.report import AuditReport, ConceptInfo, SampleResult
from steerlang.errors import InputError


def test_presence_and_mismatch() -> None:
    acts = np.array([[0.15, 1.0, 0.575, 2.0, -1.0]])
    p = stats.presence(acts, np.full(5, 0.15))
    np.testing.assert_allclose(p, [[0.0, 1.0, 0.5, 1.0, 0.0]])
    assert stats.presence(np.array([[1.2, 1.6]]), np.array([1.5, 1.5])).tolist() == [[0.0, 1.0]]  # a step at t >= 1
    assert stats.mismatch(np.array([[1.0, 0.0, 0.5]]), np.array([[1.0, 1.0, 0.0]])).tolist() == [1.5]


def test_sign_test() -> None:
    assert stats.sign_test(0, 0) == 1.0
    assert stats.sign_test(10, 0) == pytest.approx(2 / 1024)
    assert stats.sign_test(5, 5) == 1.0


def test_lift_interval() -> None:
    lift, lo, hi = stats.log_lift_ci(25, 50, 50, 100)  # independent: 50% x 50% = 25%
    assert lift == pytest.approx(1.0) and lo < 1 < hi
    lift, lo, hi = stats.log_lift_ci(40, 40, 40, 200)  # a always with b
    assert lift == pytest.approx(5.0) and 3.5 < lo < lift < hi
    wide = stats.log_lift_ci(4, 4, 4, 20)  # the same lift from five times fewer samples
    assert wide[0] == pytest.approx(5.0) and wide[1] < lo
    _, lo0, hi0 = stats.log_lift_ci(0, 30, 30, 100)
    assert 0 < lo0 < hi0 < 1 and math.isfinite(lo0)


def test_cooccurrence_ranks_by_the_lower_bound_and_counts_small_pairs_last() -> None:
    rng = np.random.default_rng(0)
    n = 400
    x = rng.random((n, 4)) < 0.3
    x[:, 1] = x[:, 0] & (rng.random(n) < 0.9)  # b mostly with a: a strong, well-supported bias
    x[:, 2] = rng.random(n) < 0.05
    x[:, 3] = False
    x[:3, 2] = x[:3, 3] = True  # c and d together 3 times out of 3 d's: a huge lift, too few to read
    pairs = stats.cooccurrence(["a", "b", "c", "d"], x, "image", min_count=5)
    assert (pairs[0]["a"], pairs[0]["b"]) == ("a", "b") and pairs[0]["direction"] == "together"
    cd = next(p for p in pairs if (p["a"], p["b"]) == ("c", "d"))
    assert cd["small"] and cd["lift"] > pairs[0]["lift"] and cd["rank"] > max(p["rank"] for p in pairs if not p["small"])
    assert [p["rank"] for p in pairs] == list(range(1, len(pairs) + 1))
    assert {"a", "b", "lift", "lift_low", "lift_high", "n_ab", "n_a", "n_b", "expected", "pmi", "modality"} <= set(pairs[0])


def test_gap_kinds() -> None:
    n = 200
    cov = [
        {"concept": "absent", "image": 1, "text": 0, "both": 0, "image_only": 1, "text_only": 0},
        {"concept": "unseen", "image": 2, "text": 40, "both": 2, "image_only": 0, "text_only": 38},
        {"concept": "unnamed", "image": 40, "text": 0, "both": 0, "image_only": 40, "text_only": 0},
        {"concept": "heavy", "image": 60, "text": 20, "both": 20, "image_only": 40, "text_only": 0},
        {"concept": "fine", "image": 50, "text": 45, "both": 44, "image_only": 6, "text_only": 1},
    ]
    got = {g["concept"]: g["gap"] for g in stats.gaps(cov, n, rare=0.02)}
    assert got == {"absent": "absent", "unseen": "not_in_image", "unnamed": "not_in_text", "heavy": "image_heavy"}
    assert [g["concept"] for g in stats.gaps(cov, n)][0] == "absent"


def _report(mismatch_rows: list[tuple[int, float]]) -> AuditReport:
    concepts = [ConceptInfo("cat", "joint#0", 0.15, 0.15)]
    samples = [SampleResult(row, f"{row}.png", "a cat .", [1.0], [1.0 - m], l0=float(row), co_latents=[0] * (row % 3))
               for row, m in mismatch_rows]
    return AuditReport("c", "m", "d", 2, 0, "p", concepts, samples, {}, saev={"kind": "shared"},
                       saev_weights=np.array([0.5]))


def test_keep_fraction_ties_broken_by_row() -> None:
    rep = _report([(5, 0.0), (1, 0.0), (3, 0.5), (0, 0.0), (2, 0.9), (4, 0.2)])
    assert kept_rows(rep, 0.5, "mismatch") == [0, 1, 5]
    assert kept_rows(rep, 0.34, "mismatch") == [0, 1]  # 0.34 * 6 = 2.04 -> 2
    assert kept_rows(rep, 0.5, "l0") == [3, 4, 5]  # SAE-V scores keep the highest
    assert kept_rows(rep, 0.01, "mismatch") == [0]  # at least one
    with pytest.raises(InputError, match="--keep"):
        kept_rows(rep, 1.5, "mismatch")
    with pytest.raises(InputError, match="--by"):
        kept_rows(rep, 0.5, "nonsense")

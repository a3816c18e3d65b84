"""The audit's statistics over per-sample concept activations (numpy only, no model).

- `presence`: a soft presence in [0, 1] per concept: 0 at or below the group's threshold, rising
  linearly to 1 at the concept's typical strength (activation 1.0).
- `mismatch`: per sample, the soft symmetric difference of what the image shows and what the
  caption names, sum over concepts of |presence_image - presence_text|.
- `coverage` and `gaps`: how many samples show / name each concept; concepts a modality never or
  almost never shows, and concepts one modality shows far more often than the other (an exact
  two-sided sign test on the samples where the two disagree, as McNemar's test does).
- `cooccurrence`: for each pair of concepts, observed vs expected co-occurrence under
  independence (lift, PMI) with a 95% confidence interval of the lift (delta method on the log
  lift, counts smoothed by 0.5), ranked by the interval's lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def presence(acts: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """[N, K] soft presence: (a - t) / (1 - t) clipped to [0, 1]; a step at t where t >= 1."""
    t = np.asarray(thresholds, dtype=np.float64)[None]
    span = np.where(t < 1.0, 1.0 - t, np.inf)
    soft = np.clip((acts - t) / span, 0.0, 1.0)
    return np.where(span == np.inf, (acts > t).astype(np.float64), soft)


def mismatch(p_image: np.ndarray, p_text: np.ndarray) -> np.ndarray:
    """[N] sum over concepts of |presence in the image - presence in the caption|."""
    return np.abs(p_image - p_text).sum(axis=1)


def sign_test(b: int, c: int) -> float:
    """Exact two-sided binomial p-value of b successes out of b + c at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def coverage(names: Sequence[str], seen: np.ndarray, named: np.ndarray) -> list[dict[str, Any]]:
    """Per concept: samples whose image shows it, whose caption names it, both, only one."""
    out = []
    for k, name in enumerate(names):
        s, t = seen[:, k], named[:, k]
        out.append({"concept": name, "image": int(s.sum()), "text": int(t.sum()), "both": int((s & t).sum()),
                    "image_only": int((s & ~t).sum()), "text_only": int((t & ~s).sum())})
    return out


def gaps(cov: list[dict[str, Any]], n: int, *, rare: float = 0.02, ratio: float = 2.0,
         alpha: float = 0.01) -> list[dict[str, Any]]:
    """Concepts a modality never or almost never shows (at most `rare` of the samples: `absent` in
    both, `not_in_image` / `not_in_text` in one), and concepts one modality shows at least `ratio`
    times as often as the other with the disagreement significant at `alpha` (`image_heavy` /
    `text_heavy`). Most severe first: absent, then one modality missing, then imbalance by ratio."""
    floor = rare * n
    out = []
    for c in cov:
        img, txt = c["image"], c["text"]
        entry = {**c, "image_fraction": img / n if n else 0.0, "text_fraction": txt / n if n else 0.0}
        p = sign_test(c["image_only"], c["text_only"])
        r = (max(img, txt) + 0.5) / (min(img, txt) + 0.5)
        if img <= floor and txt <= floor:
            kind = "absent"
        elif img <= floor:
            kind = "not_in_image"
        elif txt <= floor:
            kind = "not_in_text"
        elif r >= ratio and p < alpha:
            kind = "image_heavy" if img > txt else "text_heavy"
        else:
            continue
        out.append({**entry, "gap": kind, "ratio": r, "p_value": p})
    order = {"absent": 0, "not_in_image": 1, "not_in_text": 1, "image_heavy": 2, "text_heavy": 2}
    return sorted(out, key=lambda g: (order[g["gap"]], min(g["image"], g["text"]), -g["ratio"], g["concept"]))


def log_lift_ci(n_ab: float, n_a: float, n_b: float, n: float, z: float = Z95) -> tuple[float, float, float]:
    """(lift, low, high) with the delta-method interval of log lift under the multinomial 2x2 table,
    every cell smoothed by 0.5 (so that empty cells give finite, wide intervals)."""
    n10, n01 = n_a - n_ab, n_b - n_ab
    n00 = n - n_a - n_b + n_ab
    c11, c10, c01, c00 = n_ab + 0.5, n10 + 0.5, n01 + 0.5, n00 + 0.5
    tot = c11 + c10 + c01 + c00
    p11, p1_, p_1 = c11 / tot, (c11 + c10) / tot, (c11 + c01) / tot
    log_lift = math.log(p11 / (p1_ * p_1))
    # Gradient of log p11 - log p1. - log p.1 over the cells (11, 10, 01, 00); var = (sum g^2 p - 1) / N.
    g11, g10, g01 = 1 / p11 - 1 / p1_ - 1 / p_1, -1 / p1_, -1 / p_1
    var = max((g11**2 * p11 + g10**2 * (c10 / tot) + g01**2 * (c01 / tot) - 1.0) / tot, 0.0)
    se = math.sqrt(var)
    lift = n_ab * n / (n_a * n_b) if n_a and n_b else float("nan")
    return lift, math.exp(log_lift - z * se), math.exp(log_lift + z * se)


def cooccurrence(names: Sequence[str], present: np.ndarray, modality: str, *, min_count: int = 5) -> list[dict[str, Any]]:
    """Every pair of concepts that each occur at least once: counts, expected count under
    independence, lift = observed / expected, PMI = log2 lift (None when never together), the lift's 95% interval, and
    `direction` ("together" when the interval lies above 1, "apart" below, "none"). Pairs seen
    together at least `min_count` times come first, by the interval's lower bound (descending),
    so that a large lift from a handful of samples is not read as a strong bias."""
    n = present.shape[0]
    x = present.astype(np.int64)
    counts = x.sum(0)
    joint = x.T @ x
    out = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            n_a, n_b, n_ab = int(counts[a]), int(counts[b]), int(joint[a, b])
            if n_a == 0 or n_b == 0:
                continue
            lift, lo, hi = log_lift_ci(n_ab, n_a, n_b, n)
            out.append({"modality": modality, "a": names[a], "b": names[b], "n_a": n_a, "n_b": n_b, "n_ab": n_ab,
                        "n": n, "expected": n_a * n_b / n, "lift": lift,
                        "pmi": math.log2(lift) if lift > 0 else None,
                        "lift_low": lo, "lift_high": hi,
                        "direction": "together" if lo > 1 else "apart" if hi < 1 else "none",
                        "small": n_ab < min_count})
    out.sort(key=lambda r: (r["small"], -r["lift_low"], -r["lift"], r["a"], r["b"]))
    for i, r in enumerate(out):
        r["rank"] = i + 1
    return out

"""Helpers for the audit tests: merging corpora, reading a toy corpus's truth (tests only)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np


def merge_corpora(out: Path, parts: list[tuple[str, Path]], seed: int = 0) -> Path:
    """One imagefolder from several (images under prefix/), rows interleaved in a seeded order."""
    rows = []
    for prefix, src in parts:
        (out / prefix).mkdir(parents=True)
        for line in (src / "metadata.jsonl").read_text().splitlines():
            m = json.loads(line)
            shutil.copy2(src / m["file_name"], out / prefix / m["file_name"])
            rows.append({**m, "file_name": f"{prefix}/{m['file_name']}"})
    random.Random(seed).shuffle(rows)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def truth(corpus: Path) -> dict[str, dict]:
    return {t["file_name"]: t for t in map(json.loads, (corpus / "truth.jsonl").read_text().splitlines())}


def auroc(labels: list[bool], scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    r = rankdata(scores)
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))

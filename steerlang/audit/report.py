"""The audit's result: per-sample records, and what is derived from them (coverage, gaps,
co-occurrence, mismatch, SAE-V scores), as an object and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steerlang.audit import stats
from steerlang.errors import InputError

FORMAT, VERSION = "steerlang-audit", 1

# Filtering scores and the direction in which a sample is better: the audit keeps the best ones.
# mismatch: lower is better (image and caption agree). SAE-V's scores rank descending (keep the top).
SCORES: dict[str, str] = {"mismatch": "ascending", "cosine": "descending", "co_l0": "descending", "l0": "descending"}


@dataclass
class SampleResult:
    """What the forward pass gave for one sample: per concept, the largest activation over the image
    positions and over the caption positions; SAE-V's L0 and co-occurring latents (when scored)."""

    row: int
    file_name: str
    text: str
    image: list[float]
    caption: list[float]
    l0: float | None = None
    co_latents: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "file_name": self.file_name, "text": self.text, "image": self.image,
                "caption": self.caption, "l0": self.l0, "co_latents": self.co_latents}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SampleResult:
        return cls(int(d["row"]), str(d["file_name"]), str(d["text"]), [float(x) for x in d["image"]],
                   [float(x) for x in d["caption"]], d.get("l0"), d.get("co_latents"))


@dataclass
class ConceptInfo:
    """A concept the audit read: its name, id and the thresholds of its two groups at the layer."""

    name: str
    key: str
    image_threshold: float
    text_threshold: float


@dataclass
class Settings:
    """How gaps and biases are called (see `steerlang.audit.stats`)."""

    rare: float = 0.02  # a concept shown / named in at most this fraction of samples is "almost never"
    ratio: float = 2.0  # one modality showing it this many times as often as the other is an imbalance
    alpha: float = 0.01  # ... when the sign test on the disagreeing samples is below this
    min_count: int = 5  # pairs seen together fewer times rank after all the others


@dataclass
class AuditReport:
    """Everything `steer audit` reports. Arrays are per sample (in corpus order) x concept."""

    dataset: str
    model: str
    dictionary: str
    layer: int  # image groups and SAE-V
    text_layer: int  # caption groups
    prompt: str
    concepts: list[ConceptInfo]
    samples: list[SampleResult]
    data: dict[str, Any]
    saev: dict[str, Any] | None = None
    saev_weights: np.ndarray | None = None
    settings: Settings = field(default_factory=Settings)
    seconds: float = 0.0  # time spent scoring in this run
    scored: int = 0  # samples scored in this run (fewer than n when resumed)
    thumbnails: dict[int, str] = field(default_factory=dict)  # row -> base64 PNG of the worst samples

    def __post_init__(self) -> None:
        if not self.samples:
            raise InputError(f"{self.dataset}: no usable sample to audit")
        names = self.names
        self.image_acts = np.array([s.image for s in self.samples], dtype=np.float64)
        self.text_acts = np.array([s.caption for s in self.samples], dtype=np.float64)
        t_img = np.array([c.image_threshold for c in self.concepts])
        t_txt = np.array([c.text_threshold for c in self.concepts])
        self.seen = self.image_acts > t_img[None]
        self.named = self.text_acts > t_txt[None]
        self.mismatch = stats.mismatch(stats.presence(self.image_acts, t_img), stats.presence(self.text_acts, t_txt))
        n = len(self.samples)
        s = self.settings
        self.coverage = stats.coverage(names, self.seen, self.named)
        self.gaps = stats.gaps(self.coverage, n, rare=s.rare, ratio=s.ratio, alpha=s.alpha)
        self.cooccurrence = (stats.cooccurrence(names, self.seen, "image", min_count=s.min_count)
                             + stats.cooccurrence(names, self.named, "text", min_count=s.min_count))
        if self.saev_weights is not None:
            w = self.saev_weights
            self.l0 = np.array([x.l0 for x in self.samples], dtype=np.float64)
            self.co_l0 = np.array([len(x.co_latents or ()) for x in self.samples], dtype=np.float64)
            self.cosine = np.array([float(w[x.co_latents].sum()) if x.co_latents else 0.0 for x in self.samples])
        else:
            self.l0 = self.co_l0 = self.cosine = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def n(self) -> int:
        return len(self.samples)

    def score(self, by: str) -> np.ndarray:
        """[N] the named score ("mismatch", "cosine", "co_l0", "l0")."""
        if by not in SCORES:
            raise InputError(f"--by: must be one of {', '.join(SCORES)}, got {by!r}")
        value = getattr(self, by)
        if value is None:
            raise InputError(f"--by {by}: the audit has no SAE-V scores (no SAE-V dictionary was used)")
        return np.asarray(value)

    def ranking(self, by: str) -> list[int]:
        """Sample indices, best first by `by` (see SCORES), ties broken by row."""
        s = self.score(by)
        sign = 1.0 if SCORES[by] == "ascending" else -1.0
        rows = [x.row for x in self.samples]
        return sorted(range(self.n), key=lambda i: (sign * s[i], rows[i]))

    def worst(self, k: int = 12) -> list[int]:
        """Indices of the `k` samples whose image and caption disagree most (highest mismatch)."""
        return sorted(range(self.n), key=lambda i: (-self.mismatch[i], self.samples[i].row))[:k]

    def sample_json(self, i: int) -> dict[str, Any]:
        s, names = self.samples[i], self.names
        seen = [names[k] for k in np.flatnonzero(self.seen[i])]
        named = [names[k] for k in np.flatnonzero(self.named[i])]
        d: dict[str, Any] = {
            "file_name": s.file_name, "row": s.row, "text": s.text, "mismatch": round(float(self.mismatch[i]), 6),
            "seen": seen, "named": named,
            "seen_not_named": [c for c in seen if c not in named], "named_not_seen": [c for c in named if c not in seen],
            "image": {c: round(a, 4) for c, a in zip(names, s.image, strict=True)},
            "caption": {c: round(a, 4) for c, a in zip(names, s.caption, strict=True)},
        }
        if self.cosine is not None:
            d.update({"l0": round(float(self.l0[i]), 4), "co_l0": int(self.co_l0[i]), "cosine": round(float(self.cosine[i]), 6)})
        return d

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON object (what `steer audit --json` writes)."""
        saev = None
        if self.saev is not None and self.saev_weights is not None:
            w = self.saev_weights
            saev = {**self.saev, "cross_modal_latents": int((w != 0).sum()),
                    "cross_modal_weight_mean": float(w[w != 0].mean()) if (w != 0).any() else None}
        return {
            "format": FORMAT, "version": VERSION, "dataset": self.dataset, "model": self.model,
            "dictionary": self.dictionary, "layer": self.layer, "text_layer": self.text_layer, "prompt": self.prompt,
            "n_samples": self.n, "seconds": round(self.seconds, 3),
            "scored": self.scored, "samples_per_s": round(self.scored / self.seconds, 2) if self.seconds > 0 else None,
            "data": self.data, "settings": vars(self.settings), "saev": saev,
            "concepts": [vars(c) for c in self.concepts],
            "coverage": self.coverage, "gaps": self.gaps, "cooccurrence": self.cooccurrence,
            "samples": [self.sample_json(i) for i in range(self.n)],
        }

    def summary(self, top: int = 3) -> list[str]:
        """A few lines for the terminal."""
        lines = [f"{self.dataset}: {self.n} samples audited (image layer {self.layer}, text layer {self.text_layer}), "
                 f"{len(self.concepts)} concepts, {self.data.get('bad_rows', 0)} bad rows (skipped)"]
        for reason, n in self.data.get("bad", {}).items():
            lines.append(f"  {reason}: {n}")
            lines += [f"    {_bad_row(b)}" for b in self.data.get("examples", {}).get(reason, [])[:5]]
        for g in self.gaps[:8]:
            lines.append(f"gap: {g['concept']} {g['gap']} (image {g['image']}, text {g['text']})")
        for m in ("image", "text"):
            pairs = [p for p in self.cooccurrence if p["modality"] == m and p["direction"] == "together"][:top]
            for p in pairs:
                lines.append(f"{m} bias: {p['a']} + {p['b']}: lift {p['lift']:.2f} "
                             f"[{p['lift_low']:.2f}, {p['lift_high']:.2f}], together {p['n_ab']} of {p['n']}")
        worst = self.worst(3)
        for i in worst:
            d = self.sample_json(i)
            lines.append(f"mismatch {d['mismatch']:.2f}: {d['file_name']} {d['text']!r} seen-not-named "
                         f"{d['seen_not_named']} named-not-seen {d['named_not_seen']}")
        return lines


def _bad_row(b: dict[str, Any]) -> str:
    where = f"{b.get('file')}:{b['line']}" if b.get("line") else f"{b.get('file')} row {b.get('row')}"
    return f"{where}: {b.get('name') or ''} {b.get('detail') or ''}".strip()

"""Automatic names for latents, from their top activators, scored by detection.

Offline auto-interp (no external LLM): for a latent, take the samples that activate it most,
weight the words of their captions by TF-IDF against the whole sample set, and propose the best
word. A name is only as good as its **detection score**: on held-out samples, does "the name is in
the caption" predict "the latent fires"? (balanced accuracy, as delphi scores an explanation).
Text latents can also be named by the logit lens of their decoder direction. Other namers (a CLIP
or BLIP captioner over top-activating image crops) plug in through the `Namer` protocol.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

STOPWORDS = frozenset({"a", "an", "and", "the", ".", "?", "is", "there", "what", "in", "of", "this", "<unk>", "</s>"})


@dataclass(frozen=True)
class NameCandidate:
    name: str
    score: float  # the namer's own confidence (e.g. TF-IDF weight)
    source: str  # "tfidf", "logit_lens", "partner", a plug-in's name ...
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LatentEvidence:
    """What a namer may look at for one latent: its top samples and their text (and images)."""

    latent: int
    modality: str
    top_samples: list[int]
    top_texts: list[str]
    top_images: list = field(default_factory=list)  # PIL crops, for plug-in captioners


class Namer(Protocol):
    """Anything that proposes a name for a latent from its evidence (e.g. a CLIP/BLIP captioner)."""

    def propose(self, evidence: LatentEvidence) -> NameCandidate | None: ...


def words(text: str) -> list[str]:
    return [w for w in text.split() if w not in STOPWORDS]


class TfidfNamer:
    """The most characteristic caption word of a latent's top samples (TF-IDF over all samples)."""

    def __init__(self, corpus: Sequence[str]) -> None:
        docs = [set(words(t)) for t in corpus]
        df = Counter(w for d in docs for w in d)
        n = len(docs)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}

    def propose(self, evidence: LatentEvidence) -> NameCandidate | None:
        tf = Counter(w for t in evidence.top_texts for w in set(words(t)))
        if not tf:
            return None
        n = max(1, len(evidence.top_texts))
        scores = {w: (c / n) * self.idf.get(w, 1.0) for w, c in tf.items()}
        best = max(scores, key=lambda w: (scores[w], w))
        top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:5]  # ties by word: reproducible files
        return NameCandidate(best, scores[best], "tfidf", {"top_words": [[w, round(s, 3)] for w, s in top],
                                                            "coverage": tf[best] / n})


def top_samples(pooled: np.ndarray, latent: int, n: int = 50) -> list[int]:
    """Indices of the `n` samples with the largest pooled activation (only those where it fires)."""
    col = pooled[:, latent]
    order = np.argsort(-col, kind="stable")[:n]
    return [int(i) for i in order if col[i] > 0]


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates (0.5 when a class is absent)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    tpr = (pred & truth).sum() / truth.sum() if truth.any() else 0.5
    tnr = (~pred & ~truth).sum() / (~truth).sum() if (~truth).any() else 0.5
    return float((tpr + tnr) / 2)


def detection_score(fires: np.ndarray, texts: Sequence[str], name: str) -> float:
    """Balanced accuracy of "the name is in the sample's text" as a predictor of "the latent fires"."""
    has = np.array([name in words(t) for t in texts])
    return balanced_accuracy(has, fires)


def logit_lens(direction: np.ndarray, unembed: np.ndarray, vocab: Sequence[str], top: int = 5) -> list[tuple[str, float]]:
    """Tokens whose unembedding best aligns with a (normalised) decoder direction: W_U · d/|d|."""
    d = direction / max(float(np.linalg.norm(direction)), 1e-12)
    logits = unembed @ d
    order = np.argsort(-logits)[:top]
    return [(vocab[i], float(logits[i])) for i in order]

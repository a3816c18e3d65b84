"""The audit finds what is planted in tiny toy corpora: mismatched pairs, a kind never shown, a
co-occurrence bias. Ground truth (truth.jsonl) is read here only, to check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from audit_support import auroc, merge_corpora, truth

from steerlang.audit import audit
from steerlang.audit.forward import DEFAULT_PROMPT, hidden_states, pair_batch


def test_pairs_are_built_as_the_harvester_builds_them(toy) -> None:  # noqa: ANN001
    from steerlang.dictionary.harvest import LayerCapture, position_labels
    from steerlang.runtime.adapters import adapter_for
    from steerlang.world.scenes import make_scene, render
    from steerlang.world.train import Example, collate
    from steerlang.world.vocab import DEFAULT_PROMPT as WORLD_PROMPT

    assert DEFAULT_PROMPT == WORLD_PROMPT
    bundle, _ = toy
    scenes = [make_scene(5, i) for i in range(4)]
    ref = collate(bundle, [Example(s, DEFAULT_PROMPT, s.caption) for s in scenes])
    adapter = adapter_for(bundle.model)
    pb = pair_batch(bundle, adapter, [render(s) for s in scenes], [DEFAULT_PROMPT] * 4, [s.caption for s in scenes])
    assert torch.equal(ref["input_ids"], pb.inputs["input_ids"])
    assert torch.equal(ref["attention_mask"], pb.inputs["attention_mask"])
    keep, modality, _ = position_labels(bundle, ref)
    assert torch.equal(modality == 0, pb.image) and torch.equal((modality == 2) & keep, pb.caption)
    hs = hidden_states(adapter, bundle.model, pb.inputs, [0, 2])
    with LayerCapture(bundle, [0, 2]) as cap:
        bundle.model(**{k: v for k, v in ref.items() if k != "labels"})
    for layer in (0, 2):
        assert torch.equal(hs[layer], cap.captured[layer])


def test_planted_mismatches_rank_first(toy, toy_corpus) -> None:  # noqa: ANN001
    corpus = toy_corpus("mismatch", seed=8101, count=40, mismatch_rate=0.3)
    report = audit(corpus, *toy, saev="none")
    t = truth(corpus)
    y = [t[s.file_name]["mismatched"] for s in report.samples]
    assert 6 <= sum(y) <= 20
    assert auroc(y, report.mismatch) >= 0.95
    # The wrong word of a mismatched caption is listed as named but not seen.
    for i, s in enumerate(report.samples):
        if t[s.file_name]["mismatched"]:
            kinds = {o["kind"] for o in t[s.file_name]["objects"]}
            wrong = set(s.text.split()) & set(report.names) - kinds
            assert wrong and wrong <= set(report.sample_json(i)["named_not_seen"]), s.file_name
    # Matched pairs mostly agree exactly.
    clean = [report.mismatch[i] for i in range(report.n) if not y[i]]
    assert np.median(clean) < 0.1


def test_a_kind_never_shown_is_a_gap(toy, toy_corpus) -> None:  # noqa: ANN001
    from steerlang.api import load_session

    corpus = toy_corpus("without-fish", seed=8102, count=30, without_kinds=["fish"])
    report = audit(corpus, load_session(*toy), saev="none")  # a Session brings its bundle and concept set
    gaps = {g["concept"]: g for g in report.gaps}
    assert gaps["fish"]["gap"] == "absent"
    assert gaps["fish"]["image"] == 0 and gaps["fish"]["text"] == 0
    assert set(gaps) == {"fish"}


def test_a_planted_bias_ranks_first(toy, toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    both = toy_corpus("with-cat-tree", seed=8103, count=12, with_kinds=["cat", "tree"])
    neither = toy_corpus("without-cat-tree", seed=8104, count=28, without_kinds=["cat", "tree"])
    corpus = merge_corpora(tmp_path / "bias", [("a", both), ("b", neither)])
    report = audit(corpus, *toy, saev="none")
    for modality in ("image", "text"):
        top = [p for p in report.cooccurrence if p["modality"] == modality][0]
        assert {top["a"], top["b"]} == {"cat", "tree"}, (modality, top)
        assert top["n_ab"] == 12 and top["direction"] == "together"
        assert top["lift_low"] > 1.5 and top["lift_low"] < top["lift"] < top["lift_high"]


def test_saev_scores_from_aligned_pairs(toy, toy_corpus) -> None:  # noqa: ANN001
    corpus = toy_corpus("mismatch", seed=8101, count=40, mismatch_rate=0.3)
    report = audit(corpus, *toy, saev="pairs")
    j = report.to_json()
    assert j["saev"]["kind"] == "aligned_pairs" and j["saev"]["cross_modal_latents"] > 0
    w = report.saev_weights
    for i, s in enumerate(report.samples):
        assert report.co_l0[i] == len(s.co_latents)
        assert report.cosine[i] == float(w[s.co_latents].sum()) if s.co_latents else report.cosine[i] == 0.0
    assert (report.co_l0 > 0).all()

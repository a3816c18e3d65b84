"""Image groups read before TopK (`choose_pre_group`, `choose_linear_group`) on planted pre-activations."""

from __future__ import annotations

import pytest
import torch

from steerlang.dictionary.build_concepts import (
    PRE_THRESHOLD,
    choose_linear_group,
    choose_pre_group,
    threshold_for,
)
from steerlang.dictionary.concepts import LatentGroup
from steerlang.errors import DictionaryError


def _planted(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Kind 0 on a third of the rows: latent 0 is high on its first half, latent 1 on its second
    half, latent 2 is high on every kind row and on as many background rows (imprecise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((n,), 1)
    labels[: n // 3] = 0
    pre = torch.randn(n, 3, generator=g) * 0.3
    half = n // 6
    pre[:half, 0] += 3.0
    pre[half : n // 3, 1] += 3.0
    pre[: n // 3, 2] += 3.0
    pre[n // 3 : 2 * n // 3, 2] += 3.0
    return pre, labels


def test_threshold_is_the_lowest_that_keeps_precision() -> None:
    score = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    truth = torch.tensor([True, True, False, True, False])
    # The cut keeps the scores down to 4.0 (2.0); the threshold sits halfway to the next score.
    assert threshold_for(score, truth, 1.0) == 3.5
    assert threshold_for(score, truth, 0.75) == 1.5
    assert threshold_for(score, torch.zeros(5, dtype=torch.bool), 0.5) == float("inf")


def test_threshold_never_cuts_inside_a_run_of_equal_scores() -> None:
    # Two words that share one state (layer 0): a cut inside the run would count the true rows the
    # sort put first and fire on the whole run.
    score = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    truth = torch.tensor([True, True, True, False, False, True])
    assert threshold_for(score, truth, 0.9) == 1.5
    assert threshold_for(score, torch.tensor([True, True, True, False, False, False]), 0.55) == 0.5


def test_pre_group_unions_precise_latents_and_maps_them() -> None:
    pre, labels = _planted()
    g = choose_pre_group(pre, labels, 0, [0, 1, 2], min_precision=0.95)
    assert g is not None and g.read == "pre"
    assert sorted(g.latents) == [0, 1]  # the imprecise latent 2 is never added
    assert g.train_precision >= 0.95 and g.train_recall >= 0.95
    act = g.activation(None, pre)  # type: ignore[arg-type]
    truth = labels == 0
    assert float(act[truth].median()) > 0.8 and float(act[~truth].median()) < PRE_THRESHOLD
    for j, w, b in zip(g.latents, g.weights, g.offsets, strict=True):
        t = threshold_for(pre[:, j], truth, 0.95)
        assert abs(w * t + b - PRE_THRESHOLD) < 1e-4  # each latent's own threshold reads PRE_THRESHOLD


def test_linear_group_learns_signed_weights_and_maps_its_threshold() -> None:
    """Kind 0 is where latent 0 is high *and* latent 1 is low: latent 1 (high on every kind row's
    half and on background) must get a negative weight; latent 2 is noise."""
    g = torch.Generator().manual_seed(1)
    n = 6000
    a, b = torch.rand(n, generator=g) < 0.5, torch.rand(n, generator=g) < 0.5
    labels = torch.where(a & ~b, 0, 1)
    pre = torch.randn(n, 3, generator=g) * 0.3
    pre[:, 0] += 3.0 * a
    pre[:, 1] += 3.0 * b
    out = choose_linear_group(pre, labels, 0, [0, 1, 2], min_precision=0.95)
    assert out is not None and out.read == "linear" and len(out.offsets) == 1
    w = dict(zip(out.latents, out.weights, strict=True))
    assert w[0] > 0 and w[1] < 0 and abs(w[2]) < 0.2 * min(abs(w[0]), abs(w[1]))
    assert out.train_precision >= 0.95 and out.train_recall >= 0.9
    act = out.activation(None, pre)  # type: ignore[arg-type]
    truth = labels == 0
    above = act[truth & (act > PRE_THRESHOLD)]
    assert abs(float(above.mean()) - 1.0) < 1e-3  # the typical strength on the kind reads 1.0


def test_linear_group_keeps_at_most_max_group_latents() -> None:
    pre, labels = _planted()
    out = choose_linear_group(pre, labels, 0, [2, 1, 0], max_group=2, min_precision=0.9)
    assert out is not None and sorted(out.latents) == [0, 1]  # the two that alone cover the most at 0.9


def test_latent_group_checks_its_offsets() -> None:
    LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="linear", offsets=(0.2,))
    with pytest.raises(DictionaryError, match="exactly one offset"):
        LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="linear", offsets=(0.2, 0.1))
    with pytest.raises(DictionaryError, match="one offset per latent"):
        LatentGroup(1, "image", (3, 4), (1.0, -0.5), read="pre", offsets=(0.2,))


def _planted_split(n_scenes: int, seed: int, question: bool = False):  # noqa: ANN202
    """Scenes of one object each (kind = scene index mod 8) on a 3x3 block of the 9x9 patch grid.
    Image rows: dim k high on the kind's patches, dims 20-21 everywhere; text rows: "a KIND . </s>" as one-hot dims
    8+k / 16 / 17 / 18. `question` adds a prompt offset (dim 19) to every image patch, as a
    question read before the image does at layers >= 1."""
    import numpy as np

    from steerlang.world.oracle_concepts import BACKGROUND, Split
    from steerlang.world.scenes import KINDS

    g = torch.Generator().manual_seed(seed)
    rows, labels, scenes, cells, xt, t_scene, tokens = [], [], [], [], [], [], []
    present = np.zeros((n_scenes, len(KINDS)), dtype=bool)
    for s in range(n_scenes):
        k = s % len(KINDS)
        present[s, k] = True
        r0, c0 = (s // 8) % 7, (s * 3) % 7
        block = {(r0 + i) * 9 + c0 + j for i in range(3) for j in range(3)}
        x = torch.randn(81, 24, generator=g) * 0.3
        x[:, 20] += 2.0  # background latents win the TopK off the object
        x[:, 21] += 1.5
        lab = torch.full((81,), BACKGROUND)
        for p in block:
            x[p, k] += 3.0
            lab[p] = k
        if question:
            x[:, 19] += 2.0
        rows.append(x)
        labels.append(lab)
        scenes.append(torch.full((81,), s))
        cells.append(torch.arange(81))
        for w, dim in (("a", 16), (KINDS[k], 8 + k), (".", 17), ("</s>", 18)):
            v = torch.randn(24, generator=g) * 0.1
            v[dim] += 3.0
            xt.append(v)
            t_scene.append(s)
            tokens.append(w)
    label = torch.cat(labels)
    return Split(torch.cat(rows), torch.cat(scenes), torch.cat(cells), label, label.clone(), torch.stack(xt),
                 torch.tensor(t_scene), tokens, [f"a {KINDS[s % len(KINDS)]} ." for s in range(n_scenes)], n_scenes, present)


def _identity_sae(d: int, layer: int, modality: str):  # noqa: ANN202
    """A TopK (k 2) SAE whose latent j reads and writes dimension j."""
    from steerlang.dictionary.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture="topk", d_in=d, d_sae=d, k=2, layer=layer, modality=modality))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_build_layer_fits_linear_groups_across_prompts() -> None:
    """build_layer with image_read="linear": every kind gets a signed pre-activation group fitted on
    describe and question states together, precise under both (reported as under_questions)."""
    from steerlang.world.oracle_concepts import build_layer

    sae = _identity_sae(24, 1, "image")
    train, held = _planted_split(160, 0), _planted_split(80, 1)
    questions = (_planted_split(160, 2, question=True), _planted_split(80, 3, question=True))
    report, groups = build_layer(1, sae, sae, train, held, image_read="linear", questions=questions)
    assert set(groups["image"]) == {"cat", "dog", "bird", "car", "tree", "house", "sun", "fish"}
    for k, (kind, e) in enumerate(groups["image"].items()):
        assert e["read"] == "linear" and len(e["offsets"]) == 1 and len(e["latents"]) <= 32, kind
        w = dict(zip(e["latents"], e["weights"], strict=True))
        assert max(w, key=w.get) == k, kind  # the kind's own latent carries the group
        # The threshold is the lowest that keeps training precision 0.93: held-out lands near it.
        assert e["train_precision"] >= 0.93 and e["precision"] >= 0.8 and e["recall"] >= 0.95, kind
        assert e["under_questions"]["precision"] >= 0.8 and e["under_questions"]["recall"] >= 0.95, kind
    assert report.matched >= 8 and abs(report.strict_ceiling - 0.1) < 1e-9  # 8 captions over 80 scenes
    assert report.retrieval_i2t_caption[1] == 1.0  # one kind per caption: the aligned codes find it
    for name in ("ordered", "bag"):  # the kinds' joint concepts find it too
        assert report.concept_retrieval[name]["i2t"]["caption"][1] == 1.0, name
    assert report.concept_retrieval["concepts"] == list(groups["text"]) and len(groups["text"]) == 8


def test_text_group_turns_linear_when_no_latent_marks_the_word_alone() -> None:
    """"cat" fires latents 0 and 1, "dog" only 0, "bird" only 1: every latent that fires on "cat"
    is imprecise, but their signed sum is not."""
    from steerlang.dictionary.build_concepts import Codes, choose_text_group

    sae = _identity_sae(4, 2, "text")
    g = torch.Generator().manual_seed(0)
    words = ["cat", "dog", "bird", "a"] * 60
    base = {"cat": [2.0, 2.0, 0, 0], "dog": [2.0, 0, 0, 0], "bird": [0, 2.0, 0, 0], "a": [0, 0, 2.0, 0]}
    x = torch.tensor([base[w] for w in words]) + torch.randn(len(words), 4, generator=g) * 0.2
    codes = Codes.encode(sae, x)
    code_only = choose_text_group(codes, words, "cat", 4)
    assert code_only is not None and code_only.read == "code" and code_only.train_precision < 0.9
    with torch.no_grad():
        tg = choose_text_group(codes, words, "cat", 4, pre=sae.pre_acts(x))
    assert tg is not None and tg.read == "linear" and sorted(tg.latents) == [0, 1]
    assert tg.train_precision >= 0.9 and tg.train_recall >= 0.9
    with torch.no_grad():
        fires = tg.activation(codes, sae.pre_acts(x)) > tg.threshold
    is_cat = torch.tensor([w == "cat" for w in words])
    assert float((fires & is_cat).sum()) / float(fires.sum()) >= 0.9 and float((fires & is_cat).sum()) >= 0.9 * 60


def test_latent_group_activation_reads_as_declared() -> None:
    from steerlang.dictionary.concepts import LatentGroup
    from steerlang.dictionary.sae import SAEConfig, make_sae

    sae = make_sae(SAEConfig(architecture="topk", d_in=6, d_sae=6, k=2, layer=0, modality="image"))
    h = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pre = sae.pre_acts(h)
        z = sae.encode(h)
        g = LatentGroup(0, "image", (1, 3), (2.0, -1.0), scale=4.0)
        torch.testing.assert_close(g.activation(sae, h), (2 * z[:, 1] - z[:, 3]) / 4)
        g = LatentGroup(0, "image", (1, 3), (2.0, -1.0), read="linear", offsets=(0.5,))
        torch.testing.assert_close(g.activation(sae, h), 2 * pre[:, 1] - pre[:, 3] + 0.5)
        g = LatentGroup(0, "image", (1, 3), (2.0, -1.0), read="pre", offsets=(0.5, 0.1))
        torch.testing.assert_close(g.activation(sae, h), torch.maximum(2 * pre[:, 1] + 0.5, -pre[:, 3] + 0.1))


def test_thresholds_for_is_threshold_for_on_every_column() -> None:
    from steerlang.dictionary.build_concepts import thresholds_for

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 50, generator=g)
    x[:, :10] = torch.round(x[:, :10] * 2) / 2  # runs of equal scores
    truth = torch.rand(3000, generator=g) < 0.2
    x[truth, 10:30] += 2.0
    x[:, 49] = 0.0  # one score everywhere: a cut only below every row
    for p in (0.5, 0.9, 0.99):
        want = torch.tensor([threshold_for(x[:, j], truth, p) for j in range(50)])
        assert torch.equal(thresholds_for(x, truth, p, chunk=7), want)

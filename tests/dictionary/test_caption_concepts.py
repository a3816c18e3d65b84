"""The label-free pieces of the caption-only concept builder, on values computed by hand."""

from __future__ import annotations

import torch

from steerlang.dictionary import caption_concepts as cc


def _split(n: int, grid: tuple[int, int], captions: list[str] | None = None, d: int = 2) -> cc.CorpusLayer:
    p = grid[0] * grid[1]
    scene = torch.arange(n).repeat_interleave(p)
    cell = torch.arange(p).repeat(n)
    return cc.CorpusLayer(torch.zeros(n * p, d), scene, cell, torch.zeros(0, d), torch.zeros(0, dtype=torch.long), [],
                          captions or [""] * n, list(range(n)), grid)


def test_concept_words_keep_words_naming_enough_samples_but_not_most() -> None:
    caps = ["a cat and a dog ."] * 30 + ["a cat ."] * 25 + ["a bird ."] * 5
    # cat: 55 of 60 (> half: separates nothing), dog: 30, bird: 5 (< 20): only dog is kept
    assert cc.concept_words(caps) == ["dog"]
    assert cc.concept_words(caps, max_fraction=1.0) == ["cat", "dog"]
    assert cc.concept_words(caps, min_samples=5, max_fraction=1.0) == ["cat", "dog", "bird"]


def test_normalise_token_drops_word_markers() -> None:
    assert cc.normalise_token("\u2581Cat") == "cat"
    assert cc.normalise_token("\u0120dog") == "dog"
    assert cc.normalise_token("tree") == "tree"


def test_split_rows_holds_out_every_eighth_row() -> None:
    train, held = cc.split_rows(range(20))
    assert held == [7, 15]
    assert len(train) == 18 and 7 not in train


def test_spread_rows_keeps_at_most_the_cap_evenly_and_the_held_out_share() -> None:
    train, held = cc.split_rows(range(80))  # 70 training rows, 10 held out (7, 15, ..., 79)
    assert cc.spread_rows(train, held, None) == (train, held)
    assert cc.spread_rows(train, held, 80) == (train, held)
    t, h = cc.spread_rows(train, held, 16)
    assert len(h) == 2 and len(t) == 14  # 16 / 8 held out
    assert h == [7, 47]  # held[0], held[5]: i * 10 // 2
    assert t == [train[i * 70 // 14] for i in range(14)] and t[:3] == [0, 5, 11]
    assert all(r % cc.HELD_EVERY != cc.HELD_EVERY - 1 for r in t)


def test_image_scores_are_the_max_over_each_images_patches() -> None:
    s = _split(2, (1, 3))
    pre = torch.tensor([[1.0, 0.0], [3.0, -1.0], [2.0, -2.0], [0.0, 5.0], [-1.0, 4.0], [0.5, 0.0]])
    assert torch.equal(cc.image_scores(s, pre), torch.tensor([[3.0, 0.0], [0.5, 5.0]]))


def test_seed_latents_pick_the_latent_that_separates_named_images() -> None:
    named = torch.tensor([True] * 10 + [False] * 90)
    scores = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    scores[:10, 1] += 10.0  # latent 1 is high exactly on images whose caption names the word
    seeds = cc.seed_latents(scores, named, neg_quantile=1.0)
    assert seeds.latents == [1]
    assert seeds.thresholds[0] == float(scores[10:, 1].max())  # the top of the unnamed images
    assert seeds.image_precision == 1.0 and seeds.image_recall == 1.0


def test_seed_latents_none_when_no_latent_is_precise() -> None:
    named = torch.tensor([True, False] * 50)
    scores = torch.zeros(100, 4)
    assert cc.seed_latents(scores, named).latents == []


def test_valley_lies_between_two_modes() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(5000, generator=g), 6 + torch.randn(1000, generator=g)])
    v = cc.valley(values)
    assert v is not None and 2.0 < v < 4.5
    assert cc.valley(torch.randn(5000, generator=g)) is None  # one mode: no valley
    assert 1.0 < cc.otsu(values) < 5.0


def test_rough_labels_by_hand() -> None:
    # one image, a 1 x 5 strip; word 0 fires on patch 1, word 1 on patch 3; patch 2 is next to both.
    s = _split(1, (1, 5))
    fires = [torch.tensor([False, True, False, False, False]), torch.tensor([False, False, False, True, False])]
    named = [torch.tensor([True]), torch.tensor([True])]
    obj = torch.tensor([True, True, True, True, False])
    lab = cc.rough_labels(s, fires, named, obj)
    # patch 0: ring of word 0; 1: word 0 fires; 2: ring of both -> claimed twice (2 + 1 = ambiguous 3);
    # 3: word 1 fires; 4: not object-like -> background (2)
    assert lab.tolist() == [0, 0, 3, 1, 2]
    # a caption that does not name word 1: it claims nothing
    lab = cc.rough_labels(s, fires, [torch.tensor([True]), torch.tensor([False])], obj)
    assert lab.tolist() == [0, 0, 0, 2, 2]


def test_rough_labels_prefer_the_word_that_fires_on_the_patch() -> None:
    s = _split(1, (1, 3))
    fires = [torch.tensor([True, True, False]), torch.tensor([False, False, True])]
    lab = cc.rough_labels(s, fires, [torch.tensor([True])] * 2, torch.ones(3, dtype=torch.bool))
    # patch 1: word 0 fires there (2), word 1 only next to it (1): word 0
    assert lab.tolist() == [0, 0, 1]


class _S:
    def __init__(self, row: int, text: str) -> None:
        self.row, self.text = row, text


def test_caption_questions_ask_about_caption_words_only() -> None:
    q = cc.CaptionQuestions(["cat", "dog", "bird"], "is there a {word} ?")
    for row in range(50):
        prompt, answer = q(_S(row, "a cat and a tree ."))
        word = prompt.split()[3]
        assert answer == ("yes" if word == "cat" else "no")
        assert q(_S(row, "a cat and a tree .")) == (prompt, answer)  # a pure function of the row
    answers = {q(_S(r, "a cat .")) [1] for r in range(50)}
    assert answers == {"yes", "no"}


def test_caption_questions_need_a_word_slot() -> None:
    import pytest

    from steerlang.errors import InputError

    with pytest.raises(InputError, match="--question"):
        cc.CaptionQuestions(["cat"], "is there a cat ?")


def test_reference_states_average_labelled_and_background_patches() -> None:
    s = _split(2, (1, 2), d=1)
    s.x_img = torch.tensor([[1.0], [10.0], [3.0], [20.0]])  # image 0: patches 0, 1; image 1: patches 0, 1
    labels = cc.CaptionLabels(["cat"], [], [], torch.tensor([False, True, False, True]), torch.zeros(0, dtype=torch.bool),
                              torch.tensor([1, 0, 1, 1]), torch.zeros(0, dtype=torch.long), {})
    st = cc.reference_states(s, labels, 0)
    assert st["background.L0"][0].item() == 2.0  # patch 0 is never object-like: mean of 1 and 3
    assert st["background.L0"][1].item() == 15.0  # patch 1 is always object-like: its overall mean
    assert st["prototype.0.L0"][1].item() == 10.0 and st["prototype.0.L0.count"].tolist() == [0.0, 1.0]

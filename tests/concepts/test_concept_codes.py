"""Ordered retrieval codes over joint concepts (concept_codes.py) on planted positions."""

from __future__ import annotations

import math

import numpy as np
import torch

from steerlang.dictionary.concept_codes import (
    ConceptCodes,
    concept_codes,
    concept_recall,
    ordered_code,
    reading_order,
    token_index,
)


def test_reading_order_lines_first_then_columns() -> None:
    nan = math.nan
    # concepts: 0 at row 1 col 7, 1 at row 1.8 col 1 (same line: band 1.5), 2 at row 4 col 0, 3 absent
    pos = np.array([[[1, 7], [1.8, 1], [4, 0], [nan, nan]]], dtype=float)
    o = reading_order(pos)[0]
    assert o[1, 0] == 1 and o[0, 1] == -1  # same line: the left one comes first
    assert o[0, 2] == 1 and o[1, 2] == 1 and o[2, 0] == -1  # a lower line comes later, whatever its column
    assert (o[3] == 0).all() and (o[:, 3] == 0).all() and (np.diag(o) == 0).all()
    np.testing.assert_array_equal(o, -o.T)


def test_concept_codes_pool_the_strongest_and_centre_where_it_fires() -> None:
    act = torch.tensor([[0.2, -1.0], [1.0, 0.0], [3.0, 0.5]])  # rows 0-1: sample 0, row 2: sample 1
    pos = torch.tensor([[0, 0], [0, 4], [2, 2]])
    c = concept_codes(act, act > 0.5, torch.tensor([0, 0, 1]), pos, 2)
    np.testing.assert_allclose(c.strength, [[1.0, 0.0], [3.0, 0.5]])
    np.testing.assert_allclose(c.position[0, 0], [0, 4])  # only the firing row counts
    assert np.isnan(c.position[0, 1]).all() and np.isnan(c.position[1, 1]).all()  # 0.5 is not above 0.5
    np.testing.assert_allclose(c.position[1, 0], [2, 2])


def test_token_index_counts_within_each_sample() -> None:
    assert token_index(torch.tensor([0, 0, 0, 3, 3, 5])).tolist() == [0, 1, 2, 0, 1, 0]


def _codes(items: list[list[tuple[int, float, float]]], k: int) -> ConceptCodes:
    """Per sample: (concept, row, column) of the concepts present, strength 1."""
    s = np.zeros((len(items), k))
    p = np.full((len(items), k, 2), np.nan)
    for i, objs in enumerate(items):
        for c, y, x in objs:
            s[i, c], p[i, c] = 1.0, (y, x)
    return ConceptCodes(s, p)


def test_ordered_code_tells_permuted_captions_apart() -> None:
    # Images: (cat left, tree right) and (tree left, cat right); captions in reading order.
    images = _codes([[(0, 1, 1), (1, 1, 7)], [(1, 1, 1), (0, 1, 7)]], 2)
    texts = _codes([[(0, 0, 1), (1, 0, 4)], [(1, 0, 1), (0, 0, 4)]], 2)
    captions = ["a cat and a tree .", "a tree and a cat ."]
    code_i, code_t = ordered_code(images), ordered_code(texts)
    sim = code_i @ code_t.T
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0]
    r = concept_recall(images, texts, captions)
    assert r["ordered"]["i2t"]["caption"][1] == 1.0 and r["ordered"]["t2i"]["caption"][1] == 1.0
    assert r["bag"]["i2t"]["strict"][1] == 0.0  # the bags tie, and ties count against
    # One concept alone has no pairs: the order block is empty and the code is its bag.
    single = ordered_code(_codes([[(0, 2, 2)]], 2))
    np.testing.assert_allclose(single, [[1.0, 0.0, 0, 0, 0, 0]])

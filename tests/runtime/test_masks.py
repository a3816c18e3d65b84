"""Layouts and scope masks, on hand-made ids (no model)."""

from __future__ import annotations

import torch

from steerlang.lang import ir
from steerlang.runtime.masks import IMAGE, OUTPUT, PAD, PROMPT, Layout, region_mask, scope_mask

IMG, BOS, PADID = 9, 1, 0


def layout() -> Layout:
    # Sample 0: <pad> <s> img*4 t t ; sample 1: <s> img*4 t t t (left padding), a 2x2 grid.
    ids = torch.tensor([[PADID, BOS, IMG, IMG, IMG, IMG, 5, 6], [BOS, IMG, IMG, IMG, IMG, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1], [1] * 8])
    return Layout.from_prefill(ids, mask, ids == IMG, lambda _i: (2, 2), BOS)


def test_prefill_kinds_and_patches() -> None:
    lay = layout()
    pos = lay.positions(0, 8)
    assert pos.kind[0].tolist() == [PAD, PAD, IMAGE, IMAGE, IMAGE, IMAGE, PROMPT, PROMPT]
    assert pos.kind[1].tolist() == [PAD, IMAGE, IMAGE, IMAGE, IMAGE, PROMPT, PROMPT, PROMPT]
    assert pos.patch[0].tolist() == [-1, -1, 0, 1, 2, 3, -1, -1]
    assert pos.row[1, 1:5].tolist() == [0, 0, 1, 1] and pos.col[1, 1:5].tolist() == [0, 1, 0, 1]
    assert (pos.out_index == -1).all()


def test_decode_steps_are_output_positions() -> None:
    lay = layout()
    pos = lay.positions(8, 1)  # the first decode step holds generated token 0
    assert pos.kind.tolist() == [[OUTPUT], [OUTPUT]] and pos.out_index.tolist() == [[0], [0]]
    pos = lay.positions(10, 1)
    assert pos.out_index.tolist() == [[2], [2]]
    full = lay.positions(0, 11)  # without a cache: the whole sequence again
    assert full.kind[0, :8].tolist() == lay.positions(0, 8).kind[0].tolist()
    assert full.out_index[0, 8:].tolist() == [0, 1, 2]


def test_continues() -> None:
    lay = layout()
    assert lay.continues(torch.zeros(2, 1, dtype=torch.long), past=8)
    longer = torch.cat([lay.input_ids, torch.zeros(2, 2, dtype=torch.long)], dim=1)
    assert lay.continues(longer, past=0)  # cache-less continuation
    assert not lay.continues(lay.input_ids, past=0)  # the same prompt again: a new generation
    assert not lay.continues(torch.zeros(3, 1, dtype=torch.long), past=8)


def test_scope_masks() -> None:
    lay = layout()
    pos = lay.positions(0, 8)
    img = pos.kind == IMAGE
    assert torch.equal(scope_mask(ir.Scope(kind="image"), pos), img)
    assert torch.equal(scope_mask(ir.Scope(kind="prompt"), pos), pos.kind == PROMPT)
    assert torch.equal(scope_mask(ir.Scope(kind="all"), pos), pos.kind != PAD)
    assert not scope_mask(ir.Scope(kind="output"), pos).any()
    region = ir.Scope(kind="image_region", region=ir.Region(row_start=0, row_end=0.5, col_start=0.5, col_end=1))
    assert scope_mask(region, pos).nonzero().tolist() == [[0, 3], [1, 2]]  # row 0, column 1
    where = torch.zeros(2, 8, dtype=torch.bool)
    where[:, 0:4] = True
    got = scope_mask(ir.Scope(kind="image_where", where=ir.Compare(concept="cat", threshold=0.1)), pos, where)
    assert torch.equal(got, where & img)  # the where-mask, restricted to image tokens
    dec = lay.positions(8, 5)
    toks = ir.Scope(kind="output_tokens", tokens=ir.TokenRange(start=1, end=3))
    assert scope_mask(toks, dec)[0].tolist() == [False, True, True, True, False]
    assert scope_mask(ir.Scope(kind="output"), dec).all()


def test_region_fractions_cover_the_grid_once() -> None:
    lay = layout()
    pos = lay.positions(0, 8)
    quarters = [ir.Region(row_start=r, row_end=r + 0.5, col_start=c, col_end=c + 0.5) for r in (0, 0.5) for c in (0, 0.5)]
    total = sum(region_mask(pos, q).long() for q in quarters)
    assert torch.equal(total.bool(), pos.kind == IMAGE) and int(total.max()) == 1


def test_closing_fills_holes_but_does_not_grow_the_outline() -> None:
    from steerlang.runtime.masks import close_on_grid

    rows = cols = 9
    ids = torch.tensor([[1] + [9] * (rows * cols) + [5]])
    layout = Layout.from_prefill(ids, None, ids == 9, lambda _i: (rows, cols), bos_id=1)
    pos = layout.positions(0, ids.shape[1])
    ring = torch.zeros(rows, cols, dtype=torch.bool)
    ring[2:5, 2:5] = True
    ring[3, 3] = False  # a hole in a 3x3 blob
    ring[0, 8] = True  # an isolated patch in a corner
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    mask[0, 1:-1] = ring.flatten()
    mask[0, -1] = True  # a text position: left as it is
    closed = close_on_grid(mask, pos)
    want = ring.clone()
    want[3, 3] = True
    assert torch.equal(closed[0, 1:-1].view(rows, cols), want)
    assert bool(closed[0, -1]) and not bool(closed[0, 0])


def test_a_one_position_prompt_is_continued_from_its_cache() -> None:
    """A prompt of one position (generation from `<s>` alone): a call after a cache of that one
    position continues it; without a cache, only a longer sequence starting with it does."""
    lay = Layout(input_ids=torch.tensor([[1]]), kind=torch.tensor([[PROMPT]]), patch=torch.tensor([[-1]]), grid=[(0, 0)])
    assert lay.continues(torch.tensor([[7]]), past=1)
    assert not lay.continues(torch.tensor([[7]]), past=0)
    assert lay.continues(torch.tensor([[1, 7]]), past=0) and not lay.continues(torch.tensor([[2, 7]]), past=0)
    assert not lay.continues(torch.tensor([[7], [7]]), past=1)  # another batch size


def test_layout_of_a_one_column_grid_and_its_marks_off_the_image() -> None:
    """A 3 x 1 grid: patches 0, 1, 2 are rows 0, 1, 2 of column 0; every position that is not a
    patch has row, column and view -1 (the marks `Positions` documents)."""
    lay = Layout(input_ids=torch.tensor([[1, 9, 9, 9, 5]]), kind=torch.tensor([[PROMPT, IMAGE, IMAGE, IMAGE, PROMPT]]),
                 patch=torch.tensor([[-1, 0, 1, 2, -1]]), grid=[(3, 1)])
    assert lay.rows.tolist() == [[-1, 0, 1, 2, -1]] and lay.cols.tolist() == [[-1, 0, 0, 0, -1]]
    assert lay.view.tolist() == [[-1, 0, 0, 0, -1]]


def test_decode_step_positions_are_the_general_ones() -> None:
    """The cheap path for calls past the prompt gives what the general path gives for the same
    positions: output kind (int8), -1 marks, output indices from 0."""
    lay = Layout(input_ids=torch.tensor([[1, 9, 9, 5], [1, 9, 9, 6]]),
                 kind=torch.tensor([[PROMPT, IMAGE, IMAGE, PROMPT]] * 2, dtype=torch.int8),
                 patch=torch.tensor([[-1, 0, 1, -1]] * 2),
                 grid=[(1, 2), (1, 2)])
    fast, general = lay.positions(4, 3), lay.positions(3, 4)
    assert fast.kind.dtype == torch.int8 and fast.start == 4 and fast.shape == (2, 3)
    for name in ("kind", "patch", "row", "col", "out_index", "view"):
        a, b = getattr(fast, name), getattr(general, name)[:, 1:]
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert fast.out_index.tolist() == [[0, 1, 2]] * 2 and fast.patch.tolist() == [[-1] * 3] * 2


def test_layout_of_views_one_of_them_a_single_column() -> None:
    """Views 2 x 2 (patches 0-3) and 3 x 1 (patches 4-6): rows, columns and views per view; -1 on
    the positions that are not patches."""
    from steerlang.runtime.masks import ImageGrid, View

    patch = torch.tensor([[-1, 0, 1, 2, 3, 4, 5, 6, -1]])
    kind = torch.tensor([[PROMPT] + [IMAGE] * 7 + [PROMPT]], dtype=torch.int8)
    lay = Layout(input_ids=torch.zeros_like(patch), kind=kind, patch=patch,
                 grid=[ImageGrid([View(0, 2, 2), View(4, 3, 1, None, "column")])])
    assert lay.rows.tolist() == [[-1, 0, 0, 1, 1, 0, 1, 2, -1]]
    assert lay.cols.tolist() == [[-1, 0, 1, 0, 1, 0, 0, 0, -1]]
    assert lay.view.tolist() == [[-1, 0, 0, 0, 0, 1, 1, 1, -1]]

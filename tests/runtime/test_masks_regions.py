"""Region masks on grids larger than 2x2 and through view boxes that do not start at the image's
corner, checked against the documented rule evaluated in exact arithmetic (no model).

A patch of a view with `rows` x `cols` patches and box (top, left, bottom, right) starts at image
row `top + r * (bottom - top) / rows` and column `left + c * (right - left) / cols`; `region
[r0:r1, c0:c1]` holds the patches whose start is in [r0, r1) x [c0, c1) (for a view covering the
whole image: `r0*rows <= r < r1*rows`, docs/runtime.md). Written with mutation testing
(benchmarks/MUTATION.md): each case below fails when one operator of `region_mask` is changed.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from steerlang.lang.ir import Region
from steerlang.runtime.masks import ImageGrid, Layout, View, close_on_grid, region_mask, views_of

IMG, BOS, PADID = 9, 1, 0


def frac(x: float) -> Fraction:
    return Fraction(str(x))  # the decimal as written in the program: 0.6 is 3/5, not 0.59999...


def inside(region: Region, view: View, r: int, c: int) -> bool:
    """The documented rule, in exact arithmetic: the patch's top-left corner lies in the region."""
    top, left, bottom, right = (frac(v) for v in (view.box or (0.0, 0.0, 1.0, 1.0)))
    row = top + Fraction(r) * (bottom - top) / view.rows
    col = left + Fraction(c) * (right - left) / view.cols
    return (frac(region.row_start) <= row < frac(region.row_end)) and (frac(region.col_start) <= col < frac(region.col_end))


def test_views_of_a_plain_grid_and_of_an_image_grid() -> None:
    assert views_of((3, 4)) == (View(0, 3, 4),)
    [v] = views_of((3, 4))
    assert (v.start, v.rows, v.cols, v.box, v.size) == (0, 3, 4, (0.0, 0.0, 1.0, 1.0), 12)
    g = ImageGrid([View(0, 2, 2), View(4, 4, 4, (0.5, 0.5, 1.0, 1.0), "zoom")])
    assert views_of(g) is g.views


@pytest.mark.parametrize("region", [
    Region(row_start=0.4, row_end=0.8, col_start=0.2, col_end=0.6),  # rows 10..19, columns 5..14
    Region(row_start=0.6, row_end=1.0, col_start=0.6, col_end=1.0),  # 0.6 * 25 is 15 exactly: row and column 15 are in
    Region(row_start=0.0, row_end=0.6, col_start=0.04, col_end=0.6),  # ... and not in these
])
def test_regions_on_a_25x25_grid_follow_the_rule_exactly(region: Region) -> None:
    n = 25
    ids = torch.tensor([[BOS] + [IMG] * (n * n) + [5]])
    pos = Layout.from_prefill(ids, None, ids == IMG, lambda _i: (n, n), BOS).positions(0, ids.shape[1])
    got = region_mask(pos, region)[0, 1:-1].view(n, n)
    want = torch.tensor([[inside(region, View(0, n, n), r, c) for c in range(n)] for r in range(n)])
    assert 0 < int(want.sum()) < n * n
    assert torch.equal(got, want)
    assert not bool(region_mask(pos, region)[0, [0, -1]].any())


ZOOM = View(4, 4, 4, (0.5, 0.5, 1.0, 1.0), "zoom")  # a 4x4 view of the image's bottom-right quarter
VIEWS = ImageGrid([View(0, 2, 2), ZOOM], family="X")
REGIONS = [
    Region(row_start=0.75, row_end=1.0, col_start=0.0, col_end=1.0),
    Region(row_start=0.0, row_end=0.75, col_start=0.75, col_end=1.0),
    Region(row_start=0.5, row_end=0.75, col_start=0.625, col_end=1.0),
    Region(row_start=0.0, row_end=0.625, col_start=0.0, col_end=0.875),
    Region(row_start=0.625, row_end=0.875, col_start=0.0, col_end=0.75),
]


def batch_layout() -> Layout:
    """Sample 0: a plain 2x2 grid (left-padded); sample 1: a 2x2 global view then the 4x4 zoom."""
    ids = torch.tensor([[PADID] * 16 + [BOS] + [IMG] * 4 + [5], [BOS] + [IMG] * 20 + [5]])
    mask = torch.tensor([[0] * 16 + [1] * 6, [1] * 22])
    return Layout.from_prefill(ids, mask, ids == IMG, lambda i: (2, 2) if i == 0 else VIEWS, BOS)


def expected(region: Region, pos_patch: list[int]) -> list[bool]:
    out = []
    for p in pos_patch:
        if p < 0:
            out.append(False)
            continue
        v = next(v for v in VIEWS.views if v.start <= p < v.start + v.size)
        local = p - v.start
        out.append(inside(region, v, local // v.cols, local % v.cols))
    return out


@pytest.mark.parametrize("region", REGIONS)
def test_regions_through_a_view_box_off_the_corner(region: Region) -> None:
    layout = batch_layout()
    pos = layout.positions(0, 22)
    got = region_mask(pos, region)
    plain = [inside(region, View(0, 2, 2), r, c) for r in range(2) for c in range(2)]
    assert got[0].tolist() == [False] * 17 + plain + [False]
    want = expected(region, pos.patch[1].tolist())
    assert any(want[5:21]) and not all(want[5:21])  # the zoom view is cut by the region
    assert got[1].tolist() == want


def test_a_call_that_holds_only_the_second_view() -> None:
    """A call whose positions start after the first view (chunked prefill): the second view alone."""
    layout = batch_layout()
    pos = layout.positions(5, 17)  # sample 1: the zoom's 16 patches and the text token
    region = REGIONS[0]
    got = region_mask(pos, region)[1].tolist()
    assert got == expected(region, pos.patch[1].tolist()) and sum(got) == 8  # zoom rows 2 and 3


# -- closing per view and per sample ---------------------------------------------------------------


def test_closing_in_a_later_view_and_a_later_sample() -> None:
    """Sample 0: a plain 3x3 grid with nothing marked; sample 1: an empty 3x3 view, then a 1x5 view
    (a row: closing fills its one-patch gap) and a 3x3 view with one corner marked (closing keeps
    the corner, dilation grows it to a 2x2 block). Each view is closed alone, and dilated only with
    dilate_only."""
    from steerlang.grid import close

    views = ImageGrid([View(0, 3, 3), View(9, 1, 5, None, "row"), View(14, 3, 3, None, "corner")], family="X")
    ids = torch.tensor([[PADID] * 14 + [BOS] + [IMG] * 9, [BOS] + [IMG] * 23])
    mask_in = torch.tensor([[0] * 14 + [1] * 10, [1] * 24])
    lay = Layout.from_prefill(ids, mask_in, ids == IMG, lambda i: (3, 3) if i == 0 else views, BOS)
    pos = lay.positions(0, 24)
    row = [True, False, True, False, False]
    corner = [True] + [False] * 8
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[1, 1 + 9: 1 + 14] = torch.tensor(row)
    mask[1, 1 + 14:] = torch.tensor(corner)
    closed = close_on_grid(mask, pos)
    want_row = close(torch.tensor(row).view(1, 1, 5)).flatten().tolist()
    want_corner = close(torch.tensor(corner).view(1, 3, 3)).flatten().tolist()
    assert want_row == [True, True, True, False, False] and want_corner == corner
    assert not closed[0].any() and not closed[1, :10].any()
    assert closed[1, 10:15].tolist() == want_row and closed[1, 15:].tolist() == want_corner
    grown = close_on_grid(mask, pos, dilate_only=True)
    assert grown[1, 15:].tolist() == [True, True, False, True, True, False, False, False, False]
    assert grown[1, 10:15].tolist() == [True, True, True, True, False] and not grown[0].any()


def test_a_plain_grid_after_a_sample_with_views_is_closed_too() -> None:
    """Sample 0 has views (one 3x3 view), sample 1 a plain 3x3 grid; both are marked around the
    centre: each is closed (the centre fills in), the sample after one with views included."""
    views = ImageGrid([View(0, 3, 3)], family="X")
    ids = torch.tensor([[BOS] + [IMG] * 9, [BOS] + [IMG] * 9])
    lay = Layout.from_prefill(ids, None, ids == IMG, lambda i: views if i == 0 else (3, 3), BOS)
    pos = lay.positions(0, 10)
    ring = torch.tensor([True] * 4 + [False] + [True] * 4)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, 1:] = ring
    closed = close_on_grid(mask, pos)
    assert closed[:, 1:].all() and not closed[:, 0].any()
    corner = torch.zeros(2, 10, dtype=torch.bool)
    corner[:, 1] = True
    grown = close_on_grid(corner, pos, dilate_only=True)
    assert grown[0].tolist() == grown[1].tolist() == [False, True, True, False, True, True, False, False, False, False]


def test_a_plain_grid_of_one_row_is_closed() -> None:
    """A plain 1x5 grid (one row of patches): closing fills the one-patch gap, dilation grows by one."""
    ids = torch.tensor([[BOS] + [IMG] * 5 + [5]])
    pos = Layout.from_prefill(ids, None, ids == IMG, lambda _i: (1, 5), BOS).positions(0, 7)
    mask = torch.zeros(1, 7, dtype=torch.bool)
    mask[0, 1:6] = torch.tensor([True, False, True, False, False])
    assert close_on_grid(mask, pos)[0].tolist() == [False, True, True, True, False, False, False]
    assert close_on_grid(mask, pos, dilate_only=True)[0].tolist() == [False, True, True, True, True, False, False]

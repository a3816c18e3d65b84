"""Layouts with views (masks.ImageGrid): patch numbering given by the adapter, non-patch image-id
positions, rows and columns per view, regions through each view's box, closing per view, and the
heatmap of the primary view."""

from __future__ import annotations

import pytest
import torch

from steerlang.errors import InputError
from steerlang.lang.ir import Region
from steerlang.runtime.masks import IMAGE, PAD, PROMPT, ImageGrid, Layout, View, close_on_grid, region_mask

IMG = 9


def _layout(grid: ImageGrid, ids: torch.Tensor) -> Layout:
    return Layout.from_prefill(ids, None, ids == IMG, lambda _i: grid, bos_id=1)


def test_an_image_grid_is_its_primary_view() -> None:
    g = ImageGrid([View(0, 2, 3), View(6, 4, 4, None, "tile 1")])
    assert g == (2, 3) and tuple(g) == (2, 3) and g.views[1].size == 16
    with pytest.raises(ValueError):
        ImageGrid([])


def test_patch_numbers_and_non_patches_come_from_the_adapter() -> None:
    # <s> img img NL img img NL t : a 2x2 view whose rows end with a newline that is not a patch
    ids = torch.tensor([[1, IMG, IMG, IMG, IMG, IMG, IMG, 5]])
    patch = torch.tensor([-1, 0, 1, -1, 2, 3, -1, -1])
    layout = _layout(ImageGrid([View(0, 2, 2)], patch=patch, family="X"), ids)
    assert layout.kind[0].tolist() == [PAD, IMAGE, IMAGE, PAD, IMAGE, IMAGE, PAD, PROMPT]
    assert layout.patch[0].tolist() == [-1, 0, 1, -1, 2, 3, -1, -1]
    assert layout.rows[0].tolist() == [-1, 0, 0, -1, 1, 1, -1, -1] and layout.cols[0].tolist() == [-1, 0, 1, -1, 0, 1, -1, -1]


def test_rows_columns_and_regions_per_view() -> None:
    # global view 2x2 (patches 0-3) + a high-res view 2x4 (patches 4-11) both covering the image,
    # then a view covering the right half of the image (1x2, patches 12-13)
    views = [View(0, 2, 2), View(4, 2, 4), View(12, 1, 2, (0.0, 0.5, 1.0, 1.0), "right half")]
    ids = torch.tensor([[1] + [IMG] * 14])
    layout = _layout(ImageGrid(views, family="X"), ids)
    pos = layout.positions(0, 15)
    assert pos.view is not None and pos.view[0, 1:].tolist() == [0] * 4 + [1] * 8 + [2] * 2
    assert pos.row[0, 5:13].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and pos.col[0, 5:13].tolist() == [0, 1, 2, 3] * 2
    top_left = region_mask(pos, Region(row_start=0.0, row_end=0.5, col_start=0.0, col_end=0.5))[0, 1:].tolist()
    assert top_left == [True, False, False, False] + [True, True, False, False, False, False, False, False] + [False, False]
    right = region_mask(pos, Region(row_start=0.0, row_end=1.0, col_start=0.75, col_end=1.0))[0, 1:].tolist()
    # global col 1 starts at 0.5 (< 0.75): out; high-res col 3 starts at 0.75: in; right-half view col 1 starts at 0.75: in
    assert right == [False] * 4 + [False, False, False, True] * 2 + [False, True]


def test_a_tile_without_a_place_refuses_regions() -> None:
    ids = torch.tensor([[1] + [IMG] * 8])
    layout = _layout(ImageGrid([View(0, 2, 2), View(4, 2, 2, None, "tile 1")], family="InternVL"), ids)
    with pytest.raises(InputError, match="not yet supported for InternVL's tiled layout: the place of its tile 1"):
        region_mask(layout.positions(0, 9), Region(row_start=0.0, row_end=0.5, col_start=0.0, col_end=1.0))


def test_closing_happens_in_each_view_alone() -> None:
    # two 3x3 views; a ring around the centre of the first is closed, nothing leaks into the second
    ids = torch.tensor([[1] + [IMG] * 18])
    layout = _layout(ImageGrid([View(0, 3, 3), View(9, 3, 3, None, "tile 1")], family="X"), ids)
    pos = layout.positions(0, 19)
    mask = torch.zeros(1, 19, dtype=torch.bool)
    ring = [0, 1, 2, 3, 5, 6, 7, 8]
    mask[0, [1 + p for p in ring]] = True
    closed = close_on_grid(mask, pos)
    assert closed[0, 1:10].all() and not closed[0, 10:].any()


def test_the_heatmap_shows_the_primary_view() -> None:
    from steerlang.runtime.trace import Trace

    ids = torch.tensor([[1] + [IMG] * 8])
    # in the sequence the tile comes first, the global view last (numbered first)
    patch = torch.tensor([-1, 4, 5, 6, 7, 0, 1, 2, 3])
    layout = _layout(ImageGrid([View(0, 2, 2), View(4, 2, 2, None, "tile 1")], patch=patch, family="X"), ids)
    acts = torch.arange(9, dtype=torch.float32)[None]
    tr = Trace({"c": {0: acts}}, layout.kind, layout.patch, list(layout.grid))
    grid = tr.image_map("c", 0)
    assert grid is not None and grid.tolist() == [[5.0, 6.0], [7.0, 8.0]]

from __future__ import annotations

import re

import numpy as np
import pytest

from steerlang.errors import InputError
from steerlang.world.scenes import (
    IMAGE_SIZE,
    KINDS,
    PATCH_SIZE,
    caption_for,
    make_scene,
    make_scenes,
    object_masks,
    patch_pixel_counts,
    render,
)

CAPTION = re.compile(r"^a (\w+)( and a (\w+)){0,2} \.$")


def test_scene_is_a_function_of_seed_and_index() -> None:
    a = make_scenes(7, 20)
    b = make_scenes(7, 40)[:20]
    assert a == b
    assert [np.asarray(render(s)).tobytes() for s in a[:5]] == [np.asarray(render(s)).tobytes() for s in b[:5]]
    assert make_scenes(8, 20) != a


def test_caption_format_and_reading_order() -> None:
    for s in make_scenes(3, 200):
        assert CAPTION.match(s.caption), s.caption
        assert 1 <= len(s.objects) <= 3
        cells = [o.cell for o in s.objects]
        assert cells == sorted(cells) and len(set(cells)) == len(cells)
        assert len(set(s.kinds)) == len(s.kinds)
        assert s.caption == caption_for(s.kinds)
    assert caption_for(["cat", "tree"]) == "a cat and a tree ."


def test_with_without_objects_options() -> None:
    scenes = make_scenes(4, 100, with_kinds=["cat"], without_kinds=["dog"], objects=2)
    assert all("cat" in s.kinds and "dog" not in s.kinds and len(s.objects) == 2 for s in scenes)


def test_mismatch_rate_gives_wrong_shown_captions() -> None:
    scenes = make_scenes(5, 400, mismatch_rate=0.25)
    shown = [s for s in scenes if s.shown_caption is not None]
    assert 60 < len(shown) < 140
    assert all(s.shown_caption != s.caption for s in shown)
    assert all(s.shown_caption is None for s in make_scenes(5, 50))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"count": 0}, "--count"),
        ({"count": 3, "with_kinds": ["kat"]}, "unknown kind 'kat'"),
        ({"count": 3, "without_kinds": ["unicorn"]}, "--without"),
        ({"count": 3, "objects": 4}, "--objects"),
        ({"count": 3, "with_kinds": ["cat"], "without_kinds": ["cat"]}, "both required and forbidden"),
        ({"count": 3, "mismatch_rate": 1.5}, "--mismatch-rate"),
    ],
)
def test_bad_options_name_the_argument(kwargs: dict, needle: str) -> None:
    with pytest.raises(InputError, match=re.escape(needle)):
        make_scenes(1, **kwargs)


def test_objects_stay_inside_their_cells_and_cover_several_patches() -> None:
    g = IMAGE_SIZE // PATCH_SIZE
    per_cell = g // 3
    for s in make_scenes(6, 200):
        counts = patch_pixel_counts(s)
        for obj, c in zip(s.objects, counts, strict=True):
            rows, cols = np.nonzero(c.reshape(g, g))
            r, col = divmod(obj.cell, 3)
            assert set(rows // per_cell) == {r} and set(cols // per_cell) == {col}
            assert (c >= 8).sum() >= 3
    assert object_masks(make_scene(1, 0)).any(axis=(1, 2)).all()


def test_every_kind_appears() -> None:
    seen = {k for s in make_scenes(2, 200) for k in s.kinds}
    assert seen == set(KINDS)

"""End to end on the shipped toy world (skipped until its model and concept set exist)."""

from __future__ import annotations

import pytest

from steerlang.resources import _BASES

HAVE = any((b / "dictionaries" / "toyworld" / "concepts.json").exists() for b in _BASES) and any(
    (b / "models" / "toyworld" / "config.json").exists() for b in _BASES)
pytestmark = pytest.mark.skipif(not HAVE, reason="the shipped toy world model / concept set is not built yet")


@pytest.fixture(scope="module")
def toy():  # noqa: ANN201
    from steerlang.api import load_session

    return load_session("toyworld", "toyworld")


def test_remove_cat_on_scenes(toy) -> None:  # noqa: ANN001
    from steerlang.world.scenes import make_scenes, render

    if toy.concepts.by_name("cat") is None:
        pytest.skip("the concept set has no concept named cat")
    scenes = make_scenes(11, 6, with_kinds=["cat"])
    prog = 'let cat = concept "cat"\nsteer image where cat > 0.15 { off cat }\nexpect output lacks "cat"\ngenerate 16 tokens'
    results = toy.run(prog, images=[render(s) for s in scenes], compare=True)
    assert all("cat" in (r.baseline or "") for r in results)
    removed = sum(r.passed for r in results)
    assert removed >= 4, [(r.baseline, r.output) for r in results]


def test_noop_is_bit_identical_on_toyworld(toy) -> None:  # noqa: ANN001
    from steerlang.world.scenes import make_scenes, render

    name = toy.concepts.concepts[0].name
    pics = [render(s) for s in make_scenes(12, 4)]
    base = toy.generate(pics, max_new_tokens=12)
    [*res] = toy.run(f'let c = concept "{name}"\nsteer all {{ scale c by 1 }}', images=pics, max_new_tokens=12)
    assert [r.output for r in res] == base

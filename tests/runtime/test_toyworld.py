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


def test_off_rewrites_the_whole_object_not_only_the_marked_patches(toy) -> None:  # noqa: ANN001
    """The cat's mask at the LM input: the group's patches, closed and grown by extent latents."""
    import torch

    from steerlang.dictionary.harvest import LayerCapture
    from steerlang.world.scenes import make_scenes, patch_pixel_counts, render
    from steerlang.world.vocab import DEFAULT_PROMPT

    g = toy.concepts.by_name("cat").group(0, "image")
    assert g.extent, "the shipped cat concept has extent latents at layer 0"
    scenes = make_scenes(21, 8, with_kinds=["cat"])
    enc = toy.bundle.encode([render(s) for s in scenes], [DEFAULT_PROMPT] * len(scenes))
    img = enc["input_ids"] == toy.bundle.image_token_id
    with torch.no_grad():
        with LayerCapture(toy.bundle, [0]) as cap:
            toy.bundle.model(**enc)
        before = cap.captured[0]
        # Hooks run in the order they were registered: the capture goes on after the steering.
        with toy.steer('let cat = concept "cat"\nsteer image where cat > 0.15 at layer 0 { off cat }', trace=False), \
                LayerCapture(toy.bundle, [0]) as cap:
            toy.bundle.model(**enc)
        after = cap.captured[0]
    changed = (after != before).any(-1)[img].view(len(scenes), 81)
    cat_patches = torch.stack([torch.from_numpy(patch_pixel_counts(s)[[o.kind for o in s.objects].index("cat")] >= 8)
                               for s in scenes])
    assert (changed & cat_patches).sum() >= 0.95 * cat_patches.sum()  # the group alone marks ~60%
    others = torch.stack([torch.from_numpy((patch_pixel_counts(s)[[o.kind != "cat" for o in s.objects]] >= 8).any(0))
                          for s in scenes])
    assert (changed & others).sum() <= 0.1 * others.sum()


def test_shipped_image_groups_read_before_topk(toy) -> None:  # noqa: ANN001
    """The toy model reads the prompt before the image: layer-0 image groups read each latent's
    pre-activation with its own threshold; later layers' image states see the prompt, so their
    groups are signed sums fitted under describe prompts and questions together. Text groups
    read codes or, where the word is spread over latents, a signed sum too."""
    assert toy.bundle.template.startswith("{prompt}")
    for kind in ("cat", "dog", "house"):
        c = toy.concepts.by_name(kind)
        reads = {g.layer: g.read for g in c.groups if g.modality == "image"}
        assert reads[0] == "pre" and all(r == "linear" for layer, r in reads.items() if layer > 0)
        text = {g.layer: g.read for g in c.groups if g.modality == "text"}
        assert sorted(text) == sorted(reads) and set(text.values()) <= {"code", "linear"}

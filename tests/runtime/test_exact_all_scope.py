"""`steer all` edits image and text positions in one call: each must come out as `steer image` and
`steer prompt` give them, including when the image half has nothing to do (no group, nothing
present) or ends early. On the identity-like dictionary of runtime_support. Written with mutation
testing (benchmarks/MUTATION.md): a `continue` turned `break` in the loop over modalities left the
text positions unedited."""

from __future__ import annotations

import pytest
import torch
from runtime_support import EXACT_GROUPS, encode, kinds, steered_input

from steerlang.runtime.session import load_image

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS) + 'let x3 = concept "x3"\n'
# x3 has no image group: a second block makes layer 0 compute image latents all the same, so the
# image half of `steer all` runs and finds nothing present.
IMAGE_TOO = "\nsteer image at layer 0 { scale dog by 1 }"


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


@pytest.mark.parametrize("edit", ["off cat", "replace cat with dog", "add word * 3", "set star = 2",
                                  "scale dog by 3", "clamp cat to [0, 1]", "off x3", "replace x3 with word"])
def test_steer_all_is_steer_image_plus_steer_prompt(exact_session, enc, edit: str) -> None:  # noqa: ANN001
    img, prompt = kinds(exact_session, enc)
    before, after_all = steered_input(exact_session, HEAD + f"steer all at layer 0 {{ {edit} }}" + IMAGE_TOO, enc, 0)
    _, after_img = steered_input(exact_session, HEAD + f"steer image at layer 0 {{ {edit} }}" + IMAGE_TOO, enc, 0)
    _, after_prompt = steered_input(exact_session, HEAD + f"steer prompt at layer 0 {{ {edit} }}" + IMAGE_TOO, enc, 0)
    assert not torch.equal(after_prompt[prompt], before[prompt])  # the edit does something to the prompt
    assert torch.equal(after_all[img], after_img[img])
    assert torch.equal(after_all[prompt], after_prompt[prompt])


def test_where_below_a_threshold(exact_session, enc) -> None:  # noqa: ANN001
    """`where fish < t`: fish reads h_25 + 2 > 0 on every patch, so below 0.0001 nowhere (nothing
    changes) and below 100 everywhere (every image position is set)."""
    img, _ = kinds(exact_session, enc)
    before, after = steered_input(exact_session, HEAD + "steer image where fish < 0.0001 at layer 0 { set word = 5 }", enc, 0)
    assert torch.equal(after, before)
    before, after = steered_input(exact_session, HEAD + "steer image where fish < 100 at layer 0 { set word = 5 }", enc, 0)
    changed = (after != before).any(-1)
    assert torch.equal(changed, img)


@pytest.mark.parametrize("edit", ["replace x3 with x5", "off x3"])
def test_steer_all_without_image_latents_at_the_layer(exact_session, enc, edit: str) -> None:  # noqa: ANN001
    """No concept of the program has an image group at layer 0: the image half of `steer all` has
    no codes to edit and the text half is still edited."""
    head = HEAD + 'let x5 = concept "x5"\n'
    img, prompt = kinds(exact_session, enc)
    before, after_all = steered_input(exact_session, head + f"steer all at layer 0 {{ {edit} }}", enc, 0)
    _, after_prompt = steered_input(exact_session, head + f"steer prompt at layer 0 {{ {edit} }}", enc, 0)
    assert not torch.equal(after_prompt[prompt], before[prompt])
    assert torch.equal(after_all[prompt], after_prompt[prompt]) and torch.equal(after_all[img], before[img])


def test_two_chains_gated_at_a_lower_layer(exact_session, enc) -> None:  # noqa: ANN001
    """Two forced chains whose second links (layer 1) are gated by x3 and by x5, which exist at
    layer 0 only and read about 2 on the prompt: both gates are read at layer 0, so `on star`
    applies on the prompt (star's latents, p_j = h_j + 2, give 2 p_22 - p_23 = 1 there; about 2
    without the edit) whichever chain comes first."""
    head = HEAD + 'let x5 = concept "x5"\n'
    _, prompt = kinds(exact_session, enc)
    one = "force chain a: x3 at layer 0 -> word at layer 1"
    two = "force chain b: x5 at layer 0 -> star at layer 1"
    for prog in (two, one + "\n" + two, two + "\n" + one):
        _, after = steered_input(exact_session, head + prog, enc, 1)
        h = after[prompt]
        star = 2 * (h[:, 22] + 2) - (h[:, 23] + 2)
        assert torch.allclose(star, torch.ones_like(star), atol=1e-4), prog


@pytest.fixture(scope="module")
def full_bg_session(bundle, tmp_path_factory):  # noqa: ANN001, ANN201
    """The identity-like SAEs at layer 0 and one concept, cat = z_3 (present everywhere), with a
    background row for every one of the 81 patches (row p = p * 0.01 + 7)."""
    import json

    from runtime_support import exact_sae

    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary
    from steerlang.runtime.session import Session

    root = tmp_path_factory.mktemp("fullbg") / "set"
    root.mkdir(parents=True)
    entries = []
    for m in ("image", "text"):
        save_dictionary(exact_sae("relu", 0, m), root / f"saes/layer0-{m}")
        entries.append({"layer": 0, "modality": m, "path": f"saes/layer0-{m}"})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": [0], "modalities": ["image", "text"], "saes": entries}))
    rows, cols = bundle.patch_grid
    bg = torch.arange(rows * cols, dtype=torch.float32)[:, None] * 0.01 + 7.0
    cat = Concept("joint", 0, "cat", (), tuple(LatentGroup(0, m, (3,), (1.0,)) for m in ("image", "text")))  # type: ignore[arg-type]
    save_concept_set(root, name="fullbg", model="tiny", layers=[0], concepts=[cat],
                     tensors={"background.L0": bg.expand(rows * cols, 32).contiguous()})
    return Session(bundle, load_concept_set(root))


def test_steer_all_after_the_background_gave_every_present_patch_a_state(full_bg_session, enc) -> None:  # noqa: ANN001
    """`off cat` on every image patch: each gets the background's state and the image half ends
    there; the prompt half is still edited, as `steer prompt` edits it."""
    s = full_bg_session
    img, prompt = kinds(s, enc)
    head = 'let cat = concept "cat"\n'
    before, after_all = steered_input(s, head + "steer all at layer 0 { off cat }", enc, 0)
    _, after_img = steered_input(s, head + "steer image at layer 0 { off cat }", enc, 0)
    _, after_prompt = steered_input(s, head + "steer prompt at layer 0 { off cat }", enc, 0)
    n = int(img[0].sum())  # patches per image
    assert torch.allclose(after_img[img], torch.arange(float(n)).repeat(img.shape[0])[:, None] * 0.01 + 7.0, atol=1e-6)
    assert not torch.equal(after_prompt[prompt], before[prompt])
    assert torch.equal(after_all[img], after_img[img]) and torch.equal(after_all[prompt], after_prompt[prompt])

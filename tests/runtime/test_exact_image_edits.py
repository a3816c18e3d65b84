"""Image overwrites, object masks with extents, reads from another layer, traces over decode steps
and forced chains, on an identity-like dictionary with a background, computed by hand. Written
with mutation testing (benchmarks/MUTATION.md).

The dictionary is `runtime_support.exact_sae`'s (latent j < 32 reads coordinate j: z_j = h_j + b_j)
with latent 27's bias set to 0, so z_27 = relu(h_27) fires on about half the patches (the tiny
model's states are within 0.1 of 0). Concepts (image and text groups at layers 0 and 1 unless said):

    fish  = z_25, threshold 2.0: present where h_25 > 0 (bias 2)
    half  = z_27, threshold 0 at layer 0 only (image): present where h_27 > 0
    grow  = fish with extent latent 26 (bias 1: fires everywhere) at layer 0
    grow0 = fish with extent latent 24 (bias -5: never fires) at layer 0
    cat   = (z_3 + 0.5 z_5) / 0.25 (as in test_exact_edits.py), prototype 1 only at layer 0
    word  = z_30 (bias 2)
    one   = z_28 (bias 1: ~1 everywhere), threshold 2.0, at layer 0 only (image and text)

The background at layer 0 is row p = p * 0.01 + 7 (every coordinate), for the first 80 of the 81
patches only (patch 80 has no background state: `off` takes the latent fallback there).
"""

from __future__ import annotations

import json

import pytest
import torch
from runtime_support import EXACT_BIAS, encode, exact_sae, kinds, steered_input

from steerlang.runtime.session import load_image

GRID = 9
HEAD = "".join(f'let {n} = concept "{n}"\n' for n in ("fish", "half", "grow", "grow0", "cat", "word", "one"))


BG = torch.arange(GRID * GRID - 1, dtype=torch.float32)[:, None] * 0.01 + 7.0  # [80, 1] the background rows


def bias(j: int) -> float:
    return 0.0 if j == 27 else EXACT_BIAS.get(j, 1.0)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):  # noqa: ANN001, ANN201
    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary

    root = tmp_path_factory.mktemp("imageset") / "set"
    root.mkdir(parents=True)
    entries = []
    for layer in (0, 1):
        for m in ("image", "text"):
            sae = exact_sae("relu", layer, m)
            with torch.no_grad():
                sae.b_enc[27] = 0.0
            rel = f"saes/layer{layer}-{m}"
            save_dictionary(sae, root / rel)
            entries.append({"layer": layer, "modality": m, "path": rel})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": [0, 1], "modalities": ["image", "text"], "saes": entries}))

    def groups(lat, w, scale=1.0, thr=0.3, extent=(), layers=(0, 1), mods=("image", "text")):  # noqa: ANN001, ANN202
        return tuple(LatentGroup(la, m, lat, w, scale, thr, extent=extent if m == "image" else ())  # type: ignore[arg-type]
                     for la in layers for m in mods)

    concepts = [
        Concept("joint", 0, "fish", (), groups((25,), (1.0,), thr=2.0)),
        Concept("joint", 1, "half", (), groups((27,), (1.0,), thr=0.0, layers=(0,), mods=("image",))),
        Concept("joint", 2, "grow", (), groups((25,), (1.0,), thr=2.0, extent=(26,), layers=(0,))),
        Concept("joint", 3, "grow0", (), groups((25,), (1.0,), thr=2.0, extent=(24,), layers=(0,))),
        Concept("joint", 4, "cat", (), groups((3, 5), (1.0, 0.5), scale=0.25)),
        Concept("joint", 5, "word", (), groups((30,), (1.0,))),
        Concept("joint", 6, "one", (), groups((28,), (1.0,), thr=2.0, layers=(0,))),
    ]
    n = GRID * GRID
    tensors = {"background.L0": BG.expand(n - 1, 32).contiguous(),
               "prototype.4.L0": torch.full((n, 32), -3.0), "prototype.4.L0.count": (torch.arange(n) % 3 == 0).float()}
    save_concept_set(root, name="imageset", model="tiny", layers=[0, 1], concepts=concepts, tensors=tensors)
    return load_concept_set(root)


@pytest.fixture(scope="module")
def isession(bundle, image_set):  # noqa: ANN001, ANN201
    from steerlang.runtime.session import Session

    return Session(bundle, image_set)


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def grid_of(img: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B, 9, 9] from per-image-position values (img [B, T] bool, values [n])."""
    out = torch.zeros(img.shape[0], GRID * GRID, dtype=values.dtype)
    out[:] = values.view(img.shape[0], -1)
    return out.view(-1, GRID, GRID)


def dilate(m: torch.Tensor) -> torch.Tensor:
    """3x3 dilation of [B, R, C] bool, by hand."""
    out = m.clone()
    rows, cols = m.shape[1:]
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = torch.zeros_like(m)
            shifted[:, max(dr, 0): rows + min(dr, 0), max(dc, 0): cols + min(dc, 0)] = m[:, max(-dr, 0): rows - max(dr, 0), max(-dc, 0): cols - max(dc, 0)]
            out |= shifted
    return out


def _erode(m: torch.Tensor) -> torch.Tensor:
    """3x3 erosion of [B, R, C] bool, outside the grid counting as inside."""
    rows, cols = m.shape[1:]
    padded = torch.ones(m.shape[0], rows + 2, cols + 2, dtype=torch.bool)
    padded[:, 1:-1, 1:-1] = m
    out = torch.ones_like(m)
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            out &= padded[:, dr: dr + rows, dc: dc + cols]
    return out


def close(m: torch.Tensor) -> torch.Tensor:
    return _erode(dilate(m))


def layout(session, enc: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    img, _ = kinds(session, enc)
    patch = torch.where(img, img.long().cumsum(1) - 1, -1)
    return img, torch.where(img, patch // GRID, -1), torch.where(img, patch % GRID, -1)


def expected_off(before: torch.Tensor, img: torch.Tensor, mask: torch.Tensor, latent_rows_j: tuple[int, ...]) -> torch.Tensor:
    """`before` with the background written on the masked image patches (mask [B, 9, 9]) that have
    one (patch < 80), and coordinates `latent_rows_j` set to -b_j (codes 0) on patch 80 if masked."""
    out = before.clone()
    flat = mask.view(mask.shape[0], -1)
    for bi in range(before.shape[0]):
        pos = img[bi].nonzero().flatten()
        for p in range(GRID * GRID):
            if not bool(flat[bi, p]):
                continue
            t = int(pos[p])
            if p < GRID * GRID - 1:
                out[bi, t] = BG[p]
            else:
                for j in latent_rows_j:
                    out[bi, t, j] = before[bi, t, j] - (before[bi, t, j] + bias(j)).relu()
    return out


# -- object masks: closing, extents, scope -------------------------------------------------------


@pytest.mark.parametrize("name,extent", [("fish", None), ("grow", "all"), ("grow0", "none")])
def test_off_writes_the_background_on_the_closed_and_grown_mask(isession, enc, name, extent) -> None:  # noqa: ANN001
    """`off F` in the left half of the image: the patches where F is present, closed, grown by one
    patch where an extent latent fires (everywhere for grow, nowhere for grow0), closed again, all
    kept inside the region (columns 0..4); there the background state, elsewhere nothing."""
    img, row, col = layout(isession, enc)
    before, after = steered_input(isession, HEAD + f"steer image region [0:1, 0:0.5] at layer 0 {{ off {name} }}", enc, 0)
    allowed = grid_of(img, (col[img] <= 4))
    present = grid_of(img, before[img][:, 25] + 2.0 > 2.0) & allowed
    assert present.any() and (~present & allowed).any()
    mask = close(present) & allowed
    if extent == "all":
        mask = close(mask | (dilate(mask) & ~mask)) & allowed
    grown = close(close(present) & allowed | dilate(close(present) & allowed)) & allowed
    assert not torch.equal(grown, close(present) & allowed)  # growth shows in this layout
    want = expected_off(before, img, mask, (25,))
    assert torch.equal(after, want)


def test_two_overwrites_at_one_layer_both_land(isession, enc) -> None:  # noqa: ANN001
    """`off fish` on the top rows, then on the bottom rows: both masks are written (not only the last)."""
    img, row, col = layout(isession, enc)
    before, after = steered_input(isession, HEAD + "steer image region [0:0.5, 0:1] at layer 0 { off fish }\n"
                                  "steer image region [0.5:1, 0:1] at layer 0 { off fish }", enc, 0)
    top, bottom = grid_of(img, row[img] <= 4), grid_of(img, row[img] > 4)
    present = grid_of(img, before[img][:, 25] > 0)
    mask = (close(present & top) & top) | (close(present & bottom) & bottom)
    assert (mask & top).any() and (mask & bottom).any()
    assert torch.equal(after, expected_off(before, img, mask, (25,)))


def test_off_of_a_union_marks_each_member(isession, enc) -> None:  # noqa: ANN001
    """`off (fish | half)`: present where either member is; both members' masks are written."""
    img, *_ = layout(isession, enc)
    before, after = steered_input(isession, HEAD + "steer image at layer 0 { off (fish | half) }", enc, 0)
    f, hh = grid_of(img, before[img][:, 25] > 0), grid_of(img, before[img][:, 27] > 0.0)
    assert (f & ~hh).any() and (hh & ~f).any()
    assert torch.equal(after, expected_off(before, img, close(f | hh), (25, 27)))


def test_replace_writes_the_prototype_where_seen_else_the_background(isession, enc) -> None:  # noqa: ANN001
    """replace fish with (word | cat): word has no prototype, cat has one (at patches p % 3 == 0):
    the prototype is found past the first member. Seen patches get it (-3), others the background."""
    img, *_ = layout(isession, enc)
    before, after = steered_input(isession, HEAD + "steer image at layer 0 { replace fish with (word | cat) }", enc, 0)
    mask = close(grid_of(img, before[img][:, 25] > 0))
    want = expected_off(before, img, mask, ())
    flat = mask.view(mask.shape[0], -1)
    for bi in range(before.shape[0]):
        pos = img[bi].nonzero().flatten()
        for p in range(0, GRID * GRID, 3):
            if bool(flat[bi, p]):
                want[bi, int(pos[p])] = -3.0
    for bi in range(before.shape[0]):  # patch 80 (80 % 3 != 0) has no state at all: the latent fallback
        if bool(flat[bi, -1]):
            t = int(img[bi].nonzero().flatten()[-1])
            h = before[bi, t]
            a = h[25] + 2.0  # fish's activation: fish -> 0, each member of the union set to a
            want[bi, t] = h
            want[bi, t, 25], want[bi, t, 30] = -2.0, a - 2.0
            want[bi, t, 3], want[bi, t, 5] = a * 0.25 / 1.25 - 2.0, a * 0.125 / 1.25 - 2.0
    assert bool(flat[:, -1].any())
    assert torch.allclose(after, want, atol=1e-5, rtol=0)
    assert torch.equal(after[~img], before[~img])


# -- a where-test read at another layer ----------------------------------------------------------


def test_where_reads_the_lowest_layer_when_the_edit_layer_has_no_group(isession, enc) -> None:  # noqa: ANN001
    """`half` has a group at layer 0 only: `steer image where half > 0.0 { set cat = 5 }` edits at
    layers 0 and 1 (cat's), and at layer 1 reads half from layer 0 (its state before any edit).
    The state entering layer 1 is the layer-0-only program's, with cat set at those patches."""
    img, *_ = layout(isession, enc)
    b0, _ = steered_input(isession, HEAD + "trace half", enc, 0)
    where = img & (b0[..., 27] > 0.0)
    assert where.any() and (img & ~where).any()
    _, ref = steered_input(isession, HEAD + "steer image where half > 0.0 at layer 0 { set cat = 5 }", enc, 1)
    _, got = steered_input(isession, HEAD + "steer image where half > 0.0 { set cat = 5 }", enc, 1)
    want = ref.clone()
    want[..., 3] = torch.where(where, 5 * 0.25 / 1.25 - bias(3), ref[..., 3])
    want[..., 5] = torch.where(where, 5 * 0.125 / 1.25 - bias(5), ref[..., 5])
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.equal(got[~where], ref[~where])


def test_where_at_a_layer_with_a_group_reads_that_layer(isession, enc) -> None:  # noqa: ANN001
    """fish has groups at 0 and 1: at layer 1 the where-test reads fish on the state entering layer 1."""
    img, *_ = layout(isession, enc)
    before, after = steered_input(isession, HEAD + "steer image where fish > 2.0 at layer 1 { set cat = 5 }", enc, 1)
    where = img & (before[..., 25] > 0)
    b0, _ = steered_input(isession, HEAD + "trace fish", enc, 0)
    assert not torch.equal(where, img & (b0[..., 25] > 0))  # layer 0 would mark other patches
    want = before.clone()
    want[..., 3] = torch.where(where, 5 * 0.25 / 1.25 - bias(3), before[..., 3])
    want[..., 5] = torch.where(where, 5 * 0.125 / 1.25 - bias(5), before[..., 5])
    assert torch.allclose(after, want, atol=1e-5, rtol=0) and torch.equal(after[~where], before[~where])


# -- forced chains: each link's threshold --------------------------------------------------------


def test_force_chain_fires_where_the_previous_link_passes_its_threshold(isession, enc) -> None:  # noqa: ANN001
    """force chain: fish -> word, both at layer 0: `on fish` where fish > 2.0 (its own threshold),
    `on word` where fish > 2.0 (the previous link's); on every non-pad position of the prefill."""
    img, prompt = kinds(isession, enc)
    before, after = steered_input(isession, HEAD + "force chain c: fish at layer 0 -> word at layer 0", enc, 0)
    where = (img | prompt) & (before[..., 25] > 0)
    assert where.any() and ((img | prompt) & ~where).any()
    want = before.clone()
    want[..., 25] = torch.where(where, 1.0 - bias(25), before[..., 25])
    want[..., 30] = torch.where(where, 1.0 - bias(30), before[..., 30])
    assert torch.allclose(after, want, atol=1e-5, rtol=0) and torch.equal(after[~where], before[~where])


def test_force_chain_threshold_where_the_link_has_no_group(isession, enc) -> None:  # noqa: ANN001
    """force chain: one at layer 0 -> word at layer 1. At layer 0, `on one` where one > 2.0 (its
    group's threshold): nowhere (one reads ~1). At layer 1 `one` has no group: its threshold there
    is the default 0.3, read from layer 0, so `on word` applies on every non-pad position."""
    img, prompt = kinds(isession, enc)
    b0, a0 = steered_input(isession, HEAD + "force chain c: one at layer 0 -> word at layer 1", enc, 0)
    assert torch.equal(a0, b0)
    rows = img | prompt
    assert ((b0[rows][:, 28] + 1.0 > 0.3) & (b0[rows][:, 28] + 1.0 < 2.0)).all()
    before, after = steered_input(isession, HEAD + "force chain c: one at layer 0 -> word at layer 1", enc, 1)
    want = before.clone()
    want[..., 30] = torch.where(rows, 1.0 - bias(30), before[..., 30])
    assert torch.allclose(after, want, atol=1e-5, rtol=0) and torch.equal(after[~rows], before[~rows])


# -- traces over decode steps ----------------------------------------------------------------------


def test_a_trace_keeps_the_prefill_after_decode_steps(isession, bundle, enc) -> None:  # noqa: ANN001
    """`trace fish` over a 3-token generation: the prompt positions hold the prefill's activations
    (z_25 on the state entering layer 0), the 2 fed-back tokens follow."""
    from runtime_support import gen_ids

    before, _ = steered_input(isession, HEAD + "trace fish", enc, 0)
    img, prompt = kinds(isession, enc)
    with isession.steer(HEAD + "trace fish") as st:
        gen_ids(bundle, enc, n=3)
    acts = st.trace.acts["fish"][0]
    p = enc["input_ids"].shape[1]
    assert acts.shape == (before.shape[0], p + 2)
    rows = img | prompt
    assert torch.allclose(acts[:, :p][rows], (before[rows][:, 25] + 2.0).relu(), atol=1e-5)
    assert torch.equal(acts[:, :p][~rows], torch.zeros(int((~rows).sum())))
    assert (acts[:, p:] != 0).all()


# -- an `in output` rule before any output ---------------------------------------------------------


@pytest.mark.parametrize("op,holds", [("<", True), (">", False)])
def test_an_output_rule_reads_0_before_any_output(isession, enc, op, holds) -> None:  # noqa: ANN001
    """At the prefill no output position exists yet: `fish OP 0.5 in output` compares 0 (docs:
    "0 before any"), so `<` holds (the prompt edit applies) and `>` does not."""
    before, after = steered_input(isession, HEAD + f"when fish {op} 0.5 in output {{ steer prompt at layer 0 {{ add word * 3 }} }}", enc, 0)
    _, prompt = kinds(isession, enc)
    assert torch.equal(after[~prompt], before[~prompt])
    assert bool((after[prompt] != before[prompt]).any()) is holds

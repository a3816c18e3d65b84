"""Exact tests for the mutants benchmarks/MUTATION.md listed as "worth a test later": extents that
fire on part of the image and unions whose members differ in their extents, a prototype at a layer
without a background, a rule read at the edit layer, an `in image` rule on a sample without an
image, the file name in front of plan errors, a group whose decoder rows cancel, a rule read at
another layer next to decode steps, `off` with a zero weight and a JumpReLU text SAE on the fused
decode path. Values are computed by hand, as in test_exact_image_edits.py (whose helpers this file
uses); each test fails on one or more of those mutants.

The dictionary is `runtime_support.exact_sae`'s (latent j < 32 reads coordinate j: z_j = h_j + b_j,
latent 32 + j reads -h_j, decoder rows e_j and -e_j) with latent 29's bias set to 0, so z_29 =
relu(h_29) fires on 60-86% of an image's patches. The text SAE at layer 1 is a JumpReLU with threshold
0 but 2.5 at latent 5 (z_5 = 0 there: h_5 + 2 < 2.1). Concepts (image and text groups at layers 0
and 1 unless said):

    fish   = z_25, threshold 2.0: present where h_25 > 0 (bias 2)
    grow   = fish with extent latent 26 (bias 1: fires everywhere) at layer 0
    grow0  = fish with extent latent 24 (bias -5: never fires) at layer 0
    patchy = fish with extent latent 29 (bias 0: fires where h_29 > 0) at layer 0
    cat    = (z_3 + 0.5 z_5) / 0.25, prototype at layer 1 only (patches p % 3 == 0, state p * 0.01 - 3)
    word   = z_30 (bias 2)
    void   = z_3 + z_35: its decoder direction e_3 - e_3 is 0
    zhalf  = z_3 (weight 1) + z_26 (weight 0), scale 1
    x0     = z_0 (bias 1: ~1 everywhere), text at layer 0 only

The background at layer 0 is row p = p * 0.01 + 7 for the first 80 of the 81 patches (as in
test_exact_image_edits.py); layer 1 has none.
"""

from __future__ import annotations

import json

import pytest
import torch
from runtime_support import encode, exact_sae, gen_ids, kinds, steered_input
from test_exact_image_edits import BG, GRID, close, dilate, expected_off, grid_of, layout

from steerlang.runtime.session import load_image

NAMES = ("fish", "grow", "grow0", "patchy", "cat", "word", "void", "zhalf", "x0")
HEAD = "".join(f'let {n} = concept "{n}"\n' for n in NAMES)
N = GRID * GRID
PROTO1 = torch.arange(N, dtype=torch.float32)[:, None] * 0.01 - 3.0  # [81, 1] cat's prototype rows at layer 1
SEEN1 = torch.arange(N) % 3 == 0
ATOL = 1e-5


@pytest.fixture(scope="module")
def sset(tmp_path_factory):  # noqa: ANN001, ANN201
    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary

    root = tmp_path_factory.mktemp("survivors") / "set"
    root.mkdir(parents=True)
    entries = []
    for layer in (0, 1):
        for m in ("image", "text"):
            jump = (layer, m) == (1, "text")
            sae = exact_sae("jumprelu" if jump else "relu", layer, m)
            with torch.no_grad():
                sae.b_enc[29] = 0.0
                if jump:
                    sae.threshold.zero_()
                    sae.threshold[5] = 2.5
            rel = f"saes/layer{layer}-{m}"
            save_dictionary(sae, root / rel)
            entries.append({"layer": layer, "modality": m, "path": rel})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": [0, 1], "modalities": ["image", "text"], "saes": entries}))

    def groups(lat, w, scale=1.0, thr=0.3, extent=(), layers=(0, 1), mods=("image", "text")):  # noqa: ANN001, ANN202
        return tuple(LatentGroup(la, m, lat, w, scale, thr, extent=extent if m == "image" else ())  # type: ignore[arg-type]
                     for la in layers for m in mods)

    concepts = [
        Concept("joint", 0, "fish", (), groups((25,), (1.0,), thr=2.0)),
        Concept("joint", 1, "grow", (), groups((25,), (1.0,), thr=2.0, extent=(26,), layers=(0,))),
        Concept("joint", 2, "grow0", (), groups((25,), (1.0,), thr=2.0, extent=(24,), layers=(0,))),
        Concept("joint", 3, "patchy", (), groups((25,), (1.0,), thr=2.0, extent=(29,), layers=(0,))),
        Concept("joint", 4, "cat", (), groups((3, 5), (1.0, 0.5), scale=0.25)),
        Concept("joint", 5, "word", (), groups((30,), (1.0,))),
        Concept("joint", 6, "void", (), groups((3, 35), (1.0, 1.0))),
        Concept("joint", 7, "zhalf", (), groups((3, 26), (1.0, 0.0))),
        Concept("text", 0, "x0", (), (LatentGroup(0, "text", (0,), (1.0,)),)),
    ]
    tensors = {"background.L0": BG.expand(N - 1, 32).contiguous(),
               "prototype.4.L1": PROTO1.expand(N, 32).contiguous(), "prototype.4.L1.count": SEEN1.float()}
    save_concept_set(root, name="survivors", model="tiny", layers=[0, 1], concepts=concepts, tensors=tensors)
    cs = load_concept_set(root)
    assert cs.background(1) is None and cs.prototype(cs.by_name("cat"), 1) is not None
    assert float(cs.sae(1, "text").threshold.detach()[5]) == 2.5
    return cs


@pytest.fixture(scope="module")
def ssession(bundle, sset):  # noqa: ANN001, ANN201
    from steerlang.runtime.session import Session

    return Session(bundle, sset)


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


# -- extents: on part of the image, and in a union ---------------------------------------------------


def test_an_extent_that_fires_on_some_patches_grows_the_mask_there_only(ssession, enc) -> None:  # noqa: ANN001
    """`off patchy` where word > 2.0 (h_30 > 0: a few scattered patches): the where-mask closed,
    grown into the neighbouring patches where the extent latent fires (z_29 > 0: h_29 > 0), closed
    again. Growing into every neighbour, or into none (a code > 1: z_29 < 0.1 everywhere), marks
    other patches in this layout."""
    img, *_ = layout(ssession, enc)
    before, after = steered_input(ssession, HEAD + "steer image where word > 2.0 at layer 0 { off patchy }", enc, 0)
    mask = close(grid_of(img, before[img][:, 30] > 0))
    ring = dilate(mask) & ~mask
    fires = grid_of(img, before[img][:, 29] > 0)
    want_mask = close(mask | (ring & fires))
    assert (ring & fires).any() and (ring & ~fires).any()
    assert bool((before[img][:, 29] < 0.1).all())
    assert not torch.equal(want_mask, mask)
    assert not torch.equal(want_mask, close(mask | ring))
    assert torch.equal(after, expected_off(before, img, want_mask, (25,)))


@pytest.mark.parametrize("union", ["(fish | grow | grow0)", "(grow | fish)"])
def test_a_union_grows_where_any_members_extent_fires(ssession, enc, union) -> None:  # noqa: ANN001
    """`off (fish | grow | grow0)` in the left half: the members mark the same patches (z_25 > 2);
    fish has no extent, grow's fires everywhere, grow0's nowhere: the union grows by one patch
    everywhere (any member's extent), as `off grow` does, whatever the members' order."""
    img, _row, col = layout(ssession, enc)
    before, after = steered_input(ssession, HEAD + f"steer image region [0:1, 0:0.5] at layer 0 {{ off {union} }}", enc, 0)
    allowed = grid_of(img, col[img] <= 4)
    mask = close(grid_of(img, before[img][:, 25] > 0) & allowed) & allowed
    grown = close(mask | (dilate(mask) & ~mask)) & allowed
    assert not torch.equal(grown, mask)
    assert torch.equal(after, expected_off(before, img, grown, (25,)))
    _, alone = steered_input(ssession, HEAD + "steer image region [0:1, 0:0.5] at layer 0 { off grow }", enc, 0)
    assert torch.equal(after, alone)


# -- a prototype at a layer without a background -----------------------------------------------------


def test_replace_with_a_prototype_at_a_layer_without_a_background(ssession, enc) -> None:  # noqa: ANN001
    """`replace fish with cat` at layer 1, where the concept set has cat's prototype but no
    background: patches where cat was seen (p % 3 == 0) get the prototype's state; the other
    marked patches take the latent fallback (fish -> 0, cat set to fish's activation a:
    codes a * 0.25 / 1.25 * (1, 0.5) on latents 3 and 5)."""
    img, *_ = layout(ssession, enc)
    before, after = steered_input(ssession, HEAD + "steer image at layer 1 { replace fish with cat }", enc, 1)
    mask = close(grid_of(img, before[img][:, 25] > 0)).view(before.shape[0], -1)
    want = before.clone()
    for bi in range(before.shape[0]):
        pos = img[bi].nonzero().flatten()
        for p in range(N):
            if not bool(mask[bi, p]):
                continue
            t = int(pos[p])
            if bool(SEEN1[p]):
                want[bi, t] = PROTO1[p]
            else:
                a = (before[bi, t, 25] + 2.0).relu()
                want[bi, t, 25] = -2.0
                want[bi, t, 3], want[bi, t, 5] = a * 0.2 - 2.0, a * 0.1 - 2.0
    assert (mask & SEEN1).any() and (mask & ~SEEN1).any()
    assert torch.allclose(after, want, atol=ATOL, rtol=0)
    assert torch.equal(after[~img], before[~img])


# -- rules: the layer a condition is read at, a sample without an image ------------------------------


def test_a_rule_edited_at_layer_1_reads_its_concept_at_layer_1(ssession, enc) -> None:  # noqa: ANN001
    """fish has groups at layers 0 and 1: a rule gating an edit at layer 1 reads fish's per-sample
    image maximum on the state entering layer 1. The threshold lies between two samples' maxima at
    layer 1, where the maxima at layer 0 are not split the same way: the rule holds on some samples
    only, and on others than a read at layer 0 (or no read, 0) would give."""
    img, prompt = kinds(ssession, enc)
    b0, _ = steered_input(ssession, HEAD + "trace fish", enc, 0)
    b1, _ = steered_input(ssession, HEAD + "trace fish", enc, 1)
    m0 = torch.where(img, b0[..., 25] + 2.0, -torch.inf).amax(1)
    m1 = torch.where(img, b1[..., 25] + 2.0, -torch.inf).amax(1)
    u = m1.unique()  # sorted
    thr = next(t for t in ((u[:-1] + u[1:]) / 2).tolist() if (m1 > t).tolist() != (m0 > t).tolist())
    holds = m1 > thr
    assert holds.any() and not holds.all()
    before, after = steered_input(ssession, HEAD + f"when fish > {thr!r} in image {{ steer prompt at layer 1 {{ add word * 3 }} }}",
                                  enc, 1)
    assert torch.equal(before, b1)
    rows = prompt & holds[:, None]
    want = before.clone()
    want[..., 30] = torch.where(rows, before[..., 30] + 3.0, before[..., 30])
    assert torch.allclose(after, want, atol=ATOL, rtol=0) and torch.equal(after[~rows], before[~rows])


@pytest.fixture(scope="module")
def enc_no_image(bundle, images):  # noqa: ANN001, ANN201
    """Samples 0 and 1 with an image, sample 2 the prompt alone (no image token)."""
    tok = bundle.processor.image_token
    p = "what is in the picture?"
    texts = [bundle.template.format(image=tok, prompt=p)] * 2 + [bundle.template.format(image="", prompt=p)]
    out = dict(bundle.processor(images=[load_image(x) for x in images[:2]], text=texts, return_tensors="pt", padding=True))
    out.pop("labels", None)
    return out


@pytest.mark.parametrize("op,edited", [("<", [False, False, True]), (">", [True, True, False])])
def test_an_image_rule_reads_0_on_a_sample_without_an_image(ssession, enc_no_image, op, edited) -> None:  # noqa: ANN001
    """A sample without image positions has no `in image` maximum: the rule reads 0 there (docs:
    "0 before any"), so `fish < 0.5 in image` holds on it only and `fish > 0.5` on the others
    (whose fish maxima are ~2)."""
    img, prompt = kinds(ssession, enc_no_image)
    assert img.any(1).tolist() == [True, True, False]
    before, after = steered_input(ssession, HEAD + f"when fish {op} 0.5 in image {{ steer prompt at layer 0 {{ add word * 3 }} }}",
                                  enc_no_image, 0)
    m = torch.where(img, before[..., 25] + 2.0, -torch.inf).amax(1)
    assert bool((m[:2] > 1.5).all())
    rows = prompt & torch.tensor(edited)[:, None]
    want = before.clone()
    want[..., 30] = torch.where(rows, before[..., 30] + 3.0, before[..., 30])
    assert torch.allclose(after, want, atol=ATOL, rtol=0) and torch.equal(after[~rows], before[~rows])


# -- the file name in front of plan errors -------------------------------------------------------------


@pytest.mark.parametrize("source", ["prog.steer", None])
def test_plan_errors_name_the_program_file(ssession, source) -> None:  # noqa: ANN001
    """IR that the checker would refuse, built by hand: an edit at layer 9 of a model with layers 0
    to 2. The plan's error starts with the program's file name, and with the message itself when
    the program has no file."""
    from steerlang.errors import InputError

    prog = ssession.compile(HEAD + "steer prompt at layer 1 { add word * 3 }")
    step = prog.steps[0]
    step = step.model_copy(update={"scope": step.scope.model_copy(update={"layers": [9]})})
    prog = prog.model_copy(update={"steps": [step], "source": source})
    with pytest.raises(InputError) as err:
        ssession.plan(prog)
    want = "layer 9 is out of range: the model has layers 0 to 2"
    assert str(err.value) == (f"{source}: {want}" if source else want)


# -- add: a group whose decoder rows cancel ----------------------------------------------------------


def test_add_skips_a_group_without_a_direction_and_adds_the_next(ssession, enc) -> None:  # noqa: ANN001
    """`add (void | word) * 3`: void's direction e_3 - e_3 is 0, so it adds nothing; word's adds
    3 * e_30. At the prefill (the general path) and at decode steps (the fused map)."""
    _, prompt = kinds(ssession, enc)
    before, after = steered_input(ssession, HEAD + "steer prompt at layer 0 { add (void | word) * 3 }", enc, 0)
    want = before.clone()
    want[..., 30] = torch.where(prompt, before[..., 30] + 3.0, before[..., 30])
    assert torch.allclose(after, want, atol=ATOL, rtol=0) and torch.equal(after[~prompt], before[~prompt])
    pairs, st = decode_pairs(ssession, enc, HEAD + "steer output at layer 1 { add (void | word) * 3 }", [1])
    assert st.plan.fused[(1, False)] is not None
    for h, h2 in pairs[1]:
        want = h.clone()
        want[..., 30] += 3.0
        assert torch.allclose(h2, want, atol=ATOL, rtol=0)


# -- decode steps: a rule read at another layer, off with a zero weight, a JumpReLU ------------------


def decode_pairs(sess, enc: dict, prog: str, layers: list[int], n: int = 4) -> tuple[dict, object]:  # noqa: ANN001
    """({layer: [(state entering it before the steering hook, after it)] at each decode step of an
    n-token generation}, the steerer)."""
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {la: [] for la in layers}
    before: dict[int, torch.Tensor] = {}
    st = sess.steer(prog, trace=False)
    handles = []

    def early(la):  # noqa: ANN001, ANN202
        def hook(_m, args, kwargs):  # noqa: ANN001, ANN202
            before[la] = (args[0] if args else kwargs["hidden_states"]).clone()
        return hook

    def late(la):  # noqa: ANN001, ANN202
        def hook(_m, args, kwargs):  # noqa: ANN001, ANN202
            if st.decoding:
                seen[la].append((before[la], (args[0] if args else kwargs["hidden_states"]).clone()))
        return hook

    blocks = sess.adapter.decoder_layers()
    try:
        for la in layers:
            handles.append(blocks[la].register_forward_pre_hook(early(la), with_kwargs=True, prepend=True))
        with st:
            for la in layers:
                handles.append(blocks[la].register_forward_pre_hook(late(la), with_kwargs=True))
            gen_ids(sess.bundle, enc, n=n)
    finally:
        for h in handles:
            h.remove()
    assert all(len(v) == n - 1 for v in seen.values())
    return seen, st


@pytest.mark.parametrize("thr,holds", [(0.5, True), (5.0, False)])
def test_a_rule_read_at_another_layer_at_decode_steps(ssession, enc, thr, holds) -> None:  # noqa: ANN001
    """`when x0 > thr in output { steer output at layer 1 { add word * 3 } }`: x0 has a group at
    layer 0 only, so layer 0 is observed for the rule (its decode steps take the general path, which
    updates the output maximum) and layer 1 is gated by the rule (also the general path). x0 reads
    ~1 (> 0.5, < 5): with 0.5 each decode step adds 3 * e_30 at layer 1, with 5 none does."""
    pairs, st = decode_pairs(ssession, enc, HEAD + f"when x0 > {thr} in output {{ steer output at layer 1 {{ add word * 3 }} }}", [0, 1])
    for h0, h0_after in pairs[0]:
        assert torch.equal(h0_after, h0)
        assert bool((h0[..., 0] + 1.0 > 0.5).all()) and bool((h0[..., 0] + 1.0 < 5.0).all())
    for h, h2 in pairs[1]:
        want = h.clone()
        if holds:
            want[..., 30] += 3.0
        assert torch.allclose(h2, want, atol=ATOL, rtol=0)
        assert bool((h2 != h).any()) is holds
    assert st.plan.fused[(0, False)] is None and st.plan.fused[(1, False)] is None  # both layers took the general path


def test_fused_off_keeps_a_zero_weight_latent(ssession, enc) -> None:  # noqa: ANN001
    """`off zhalf` at decode steps (the fused map): z_3 -> 0 (h_3 = -2), latent 26 (weight 0) keeps
    its code, every other coordinate is untouched bit for bit."""
    pairs, st = decode_pairs(ssession, enc, HEAD + "steer output at layer 1 { off zhalf }", [1])
    assert st.plan.fused[(1, False)] is not None
    others = [j for j in range(32) if j != 3]
    for h, h2 in pairs[1]:
        assert torch.allclose(h2[..., 3], torch.full_like(h2[..., 3], -2.0), atol=ATOL, rtol=0)
        assert torch.equal(h2[..., others], h[..., others])


def test_a_fused_jumprelu_layer_reads_its_thresholds(ssession, enc) -> None:  # noqa: ANN001
    """`scale cat by 3` at decode steps through the fused map on the JumpReLU text SAE at layer 1:
    z_3 = h_3 + 2 is tripled (h_3 + 2 z_3); z_5 = 0 under its threshold 2.5, so h_5 stays."""
    pairs, st = decode_pairs(ssession, enc, HEAD + "steer output at layer 1 { scale cat by 3 }", [1])
    fused = st.plan.fused[(1, False)]
    assert fused is not None and fused.sae.cfg.architecture == "jumprelu"
    others = [j for j in range(32) if j != 3]
    for h, h2 in pairs[1]:
        assert bool((h[..., 5] + 2.0 < 2.5).all())
        assert torch.allclose(h2[..., 3], h[..., 3] + 2 * (h[..., 3] + 2.0), atol=ATOL, rtol=0)
        assert torch.equal(h2[..., others], h[..., others])


def test_steer_all_after_the_background_covered_every_present_patch(ssession, enc) -> None:  # noqa: ANN001
    """`steer all { off patchy }` at layer 0: patchy is present on patches that all have a
    background row, so the image half ends after writing those states; the prompt half is still
    edited (as `steer prompt` edits it)."""
    img, prompt = kinds(ssession, enc)
    before, after_all = steered_input(ssession, HEAD + "steer all at layer 0 { off patchy }", enc, 0)
    _, after_img = steered_input(ssession, HEAD + "steer image at layer 0 { off patchy }", enc, 0)
    _, after_prompt = steered_input(ssession, HEAD + "steer prompt at layer 0 { off patchy }", enc, 0)
    assert not torch.equal(after_prompt[prompt], before[prompt]) and not torch.equal(after_img[img], before[img])
    assert torch.equal(after_all[img], after_img[img]) and torch.equal(after_all[prompt], after_prompt[prompt])

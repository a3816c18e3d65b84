"""More edits checked against values computed by hand, on the identity-like dictionary of
`runtime_support.build_exact_concept_set` (see test_exact_edits.py for the formulas): edits
limited to part of a modality's positions, `replace` with a compound, a zero weight, and a model
whose hidden states are not in the dictionary's dtype. Written with mutation testing
(benchmarks/MUTATION.md): each test fails when one of the runtime's operators is changed.

    cat = (z_3 + 0.5 z_5) / 0.25     dog = (z_10 - 0.5 z_11) / 0.7     fish = z_25 (present > 2.0)
    z_j = h_j + b_j; a latent edit z_j -> z'_j writes h'_j = h_j + (z'_j - z_j)
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from runtime_support import EXACT_BIAS, EXACT_GROUPS, encode, kinds, steered_input

from steerlang.runtime.session import load_image

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS) + "let mix = 0.5*cat + 0.5*dog\nlet pet = cat | dog\n"
ATOL = 1e-5
GRID = 9  # the tiny model's 9x9 patch grid


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def b(j: int) -> float:
    return EXACT_BIAS.get(j, 1.0)


def z(h: torch.Tensor, j: int) -> torch.Tensor:
    return (h[..., j] + b(j)).relu()


def cat(h: torch.Tensor) -> torch.Tensor:
    return (z(h, 3) + 0.5 * z(h, 5)) / 0.25


def patch_rows_cols(session, enc: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """([B, T] image positions, [B, T] patch row, [B, T] patch column; -1 off the image)."""
    img, _ = kinds(session, enc)
    patch = torch.where(img, img.long().cumsum(1) - 1, -1)
    return img, torch.where(img, patch // GRID, -1), torch.where(img, patch % GRID, -1)


# -- edits on part of a modality's positions -----------------------------------------------------


def test_clamp_in_a_region_after_off_in_another(exact_session, enc) -> None:  # noqa: ANN001
    """`off cat` on the top half, then `clamp cat to [lo, hi]` on the left half (program order, same
    layer): top-left reads 0 after off, so clamp sets it to lo; top-right stays off (clamp does not
    reach it); bottom-left is clamped (scaled where outside [lo, hi], bit for bit where inside);
    bottom-right is untouched. Region [0:0.5] of 9 rows is rows 0..4."""
    img, row, col = patch_rows_cols(exact_session, enc)
    before, _ = steered_input(exact_session, HEAD + "trace cat", enc, 0)
    top, left = img & (row <= 4), img & (col <= 4)
    bl = img & ~top & left
    a = cat(before[bl])
    u = a.unique()
    n = len(u)
    assert n > 8
    lo, hi = float(u[n // 4] + u[n // 4 + 1]) / 2, float(u[3 * n // 4] + u[3 * n // 4 + 1]) / 2
    prog = (HEAD + "steer image region [0:0.5, 0:1] at layer 0 { off cat }\n"
            f"steer image region [0:1, 0:0.5] at layer 0 {{ clamp cat to [{lo!r}, {hi!r}] }}")
    _, after = steered_input(exact_session, prog, enc, 0)
    others = [j for j in range(32) if j not in (3, 5)]
    assert torch.equal(after[..., others], before[..., others])
    assert torch.equal(after[~img], before[~img])
    # top-left: set to lo; top-right: off
    tl, tr = top & left, top & ~left
    for rows, v in ((tl, lo), (tr, 0.0)):
        assert torch.allclose(after[rows][:, 3], torch.tensor(v * 0.25 / 1.25 - b(3)).expand(int(rows.sum())), atol=ATOL, rtol=0)
        assert torch.allclose(after[rows][:, 5], torch.tensor(v * 0.125 / 1.25 - b(5)).expand(int(rows.sum())), atol=ATOL, rtol=0)
    assert torch.allclose(cat(after[tl]), torch.tensor(lo), atol=1e-4)
    # bottom-left: clamped; bottom-right: untouched
    target = a.clamp(lo, hi)
    inside, moved = a == target, a != target
    assert inside.any() and (a < lo).any() and (a > hi).any()
    h, h2 = before[bl], after[bl]
    assert torch.equal(h2[inside], h[inside])
    f = (target / a)[moved]
    for j in (3, 5):
        assert torch.allclose(h2[moved][:, j], h[moved][:, j] + (f - 1) * z(h[moved], j), atol=ATOL, rtol=0)
    br = img & ~top & ~left
    assert torch.equal(after[br], before[br])


# -- replace with a compound --------------------------------------------------------------------


@pytest.mark.parametrize("repl,share", [("mix", 0.5), ("pet", 1.0)])
def test_replace_with_a_compound(exact_session, enc, repl, share) -> None:  # noqa: ANN001
    """replace fish with (0.5*cat + 0.5*dog): where fish is present, fish's latent -> 0 and each
    term is set to its weight times fish's activation (0.5 a each); with the union (cat | dog),
    each member is set to a (weight 1)."""
    _, prompt = kinds(exact_session, enc)
    before, after = steered_input(exact_session, HEAD + f"steer prompt at layer 1 {{ replace fish with {repl} }}", enc, 1)
    fish = torch.zeros(before.shape[:2])
    fish[prompt] = z(before[prompt], 25)
    rows = prompt & (fish > 2.0)
    assert 0 < int(rows.sum()) < int(prompt.sum())
    v = share * fish[rows]
    want = {25: -b(25) + 0 * v, 3: v * 0.25 / 1.25 - b(3), 5: v * 0.125 / 1.25 - b(5), 10: v * 0.7 - b(10), 11: -b(11) + 0 * v}
    others = [j for j in range(32) if j not in want]
    assert torch.equal(after[..., others], before[..., others]) and torch.equal(after[~rows], before[~rows])
    for j, w in want.items():
        assert torch.allclose(after[rows][:, j], w, atol=ATOL, rtol=0), j
    h2 = after[rows]
    assert torch.allclose(cat(h2), v, atol=1e-4)
    assert torch.allclose((z(h2, 10) - 0.5 * z(h2, 11)) / 0.7, v, atol=1e-4)


# -- a zero weight ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zero_session(bundle, exact_concepts, tmp_path_factory):  # noqa: ANN001, ANN201
    """The exact concept set plus "half": latents 3 (weight 1) and 26 (weight 0) at every layer and
    modality, scale 1."""
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.runtime.session import Session

    root = tmp_path_factory.mktemp("zero") / "set"
    shutil.copytree(exact_concepts.root, root)
    spec = json.loads((root / "concepts.json").read_text())
    cat_spec = next(c for c in spec["concepts"] if c["name"] == "cat")
    half = copy.deepcopy(cat_spec)
    half.update(index=len(spec["concepts"]) + 100, name="half", aliases=[])
    for g in half["groups"]:
        g.update(latents=[3, 26], weights=[1.0, 0.0], scale=1.0)
    spec["concepts"].append(half)
    (root / "concepts.json").write_text(json.dumps(spec))
    return Session(bundle, load_concept_set(root))


@pytest.mark.parametrize("scope", ["prompt", "image"])
def test_off_keeps_a_zero_weight_latent(zero_session, enc, scope) -> None:  # noqa: ANN001
    """off: z_i -> 0 for w_i > 0 only; a latent of weight 0 keeps its code (docs/runtime.md)."""
    img, prompt = kinds(zero_session, enc)
    rows = img if scope == "image" else prompt
    before, after = steered_input(zero_session, f'let half = concept "half"\nsteer {scope} at layer 0 {{ off half }}', enc, 0)
    others = [j for j in range(32) if j != 3]
    assert torch.equal(after[..., others], before[..., others]) and torch.equal(after[~rows], before[~rows])
    assert torch.allclose(after[rows][:, 3], torch.tensor(-b(3)).expand(int(rows.sum())), atol=ATOL, rtol=0)


# -- a model in another dtype than the dictionary --------------------------------------------------


@pytest.fixture(scope="module")
def bf16_session(bundle, exact_concepts, tmp_path_factory):  # noqa: ANN001, ANN201
    """The tiny model in bfloat16, with the exact dictionaries saved without `apply_b_dec_to_input`
    (as Gemma Scope's are): nothing then promotes the states to float32 but the runtime's own cast."""
    from steerlang.dictionary.concepts import load_concept_set
    from steerlang.runtime.session import Session
    from steerlang.world.model import ModelBundle

    root = tmp_path_factory.mktemp("bf16") / "set"
    shutil.copytree(exact_concepts.root, root)
    for cfg in root.glob("saes/*/cfg.json"):
        spec = json.loads(cfg.read_text())
        spec["apply_b_dec_to_input"] = False
        cfg.write_text(json.dumps(spec))
    cs = load_concept_set(root)
    assert not cs.sae(0, "text").cfg.apply_b_dec_to_input
    model = copy.deepcopy(bundle.model).to(torch.bfloat16)
    return Session(ModelBundle("tiny", model, bundle.processor), cs)


def test_a_bfloat16_model_reads_and_edits_with_float32_dictionaries(bf16_session, enc) -> None:  # noqa: ANN001
    """The hidden states are bfloat16, the dictionaries float32 (as loaded): every read casts the
    states to the dictionary's dtype, every write casts back. Traces of code, pre and linear groups
    equal the formulas on the bfloat16 states; `set cat = 20` on the prompt writes coordinates 3
    and 5 (rounded to bfloat16) and leaves the others bit for bit."""
    img, prompt = kinds(bf16_session, enc)
    with bf16_session.steer(HEAD + "trace cat, moon, star") as st, torch.no_grad():
        bf16_session.model(**enc)
    before, after = steered_input(bf16_session, HEAD + "steer prompt at layer 0 { set cat = 20 }", enc, 0)
    assert before.dtype == torch.bfloat16 and after.dtype == torch.bfloat16
    h = before.float()
    for rows in (img, prompt):
        x = h[rows]
        p = {j: x[:, j] + b(j) for j in (20, 21, 22, 23)}
        want = {"cat": cat(x), "moon": torch.maximum(0.5 * p[20] - 0.1, 0.8 * p[21] + 0.05), "star": 2 * p[22] - p[23] + 0.05}
        for name, v in want.items():
            got = st.trace.acts[name][0][:, : rows.shape[1]][rows]
            assert torch.allclose(got, v, atol=1e-5), name
    others = [j for j in range(32) if j not in (3, 5)]
    assert torch.equal(after[..., others], before[..., others]) and torch.equal(after[~prompt], before[~prompt])
    for j, v in ((3, 20 * 0.25 / 1.25), (5, 20 * 0.125 / 1.25)):
        want = (h[prompt][:, j] + (v - (h[prompt][:, j] + b(j)))).to(torch.bfloat16)
        assert torch.allclose(after[prompt][:, j].float(), want.float(), atol=0.02, rtol=0), j

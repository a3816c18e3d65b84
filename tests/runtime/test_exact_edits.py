"""Every edit, checked against values computed by hand on an identity-like dictionary.

The concept set of `runtime_support.build_exact_concept_set`: latent j < 32 reads coordinate j of
the hidden state, z_j = h_j + b_j (b_j = EXACT_BIAS, 1.0 elsewhere; the tiny model's states stay
within 0.1 of 0, so every latent with a positive bias is in the linear part of its ReLU), and a
latent edit z_j -> z'_j moves only coordinate j: h'_j = h_j + (z'_j - z_j). So every edit's result
is a formula in the unsteered state h: the tests write that formula, never ask the runtime.

    cat  = (z_3 + 0.5 z_5) / 0.25          dog = (z_10 - 0.5 z_11) / 0.7      word = z_30
    fish = z_25, present (> 2.0) where h_25 > 0
    moon = max(0.5 p_20 - 0.1, 0.8 p_21 + 0.05), read "pre" (p_j = h_j - 5: codes always 0)
    star = 2 p_22 - p_23 + 0.05, read "linear"
    ghost = z_24 (bias -5: its code is always 0)
"""

from __future__ import annotations

import math

import pytest
import torch
from runtime_support import EXACT_BIAS, EXACT_GROUPS, encode, kinds, steered_input

from steerlang.runtime.session import load_image

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS) + "let mix = 0.5*cat + 0.5*dog\nlet pet = cat | dog\n"
ATOL = 1e-5  # edited coordinates: h_j + (z' - (h_j + b_j)) rounds at ~1e-7 of b_j


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


@pytest.fixture(scope="module")
def where(exact_session, enc):  # noqa: ANN001, ANN201
    img, prompt = kinds(exact_session, enc)
    return {"image": img, "prompt": prompt}


def b(j: int) -> float:
    return EXACT_BIAS.get(j, 1.0)


def z(h: torch.Tensor, j: int) -> torch.Tensor:
    """The code of latent j < 32 on states h [..., 32] (ReLU dictionaries)."""
    return (h[..., j] + b(j)).relu()


def topk_codes(h: torch.Tensor, k: int = 16) -> torch.Tensor:
    """[..., 64] the TopK dictionary's codes, by hand: pre = (h + b, b' - h), keep the k largest."""
    pre = torch.cat([h + torch.tensor([b(j) for j in range(32)]), 1.0 - h], dim=-1)
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())


def read(name: str, h: torch.Tensor, topk: bool = False) -> torch.Tensor:
    """A concept's activation on states h [..., 32], by the formulas of the module docstring."""
    lat, w, scale, _thr, how, off = EXACT_GROUPS[name]
    if how == "code":
        codes = topk_codes(h)[..., list(lat)] if topk else torch.stack([z(h, j) for j in lat], -1)
        return (codes * torch.tensor(w)).sum(-1) / scale
    p = torch.stack([h[..., j] + b(j) for j in lat], -1)
    if how == "pre":
        return (p * torch.tensor(w) + torch.tensor(off)).amax(-1)
    return p @ torch.tensor(w) + off[0]


def check(before: torch.Tensor, after: torch.Tensor, rows: torch.Tensor, new: dict[int, torch.Tensor]) -> None:
    """`after` is `before` with coordinate j := new[j] ([n] values) on `rows` ([B, T] bool), and
    bit for bit `before` everywhere else (other coordinates, other positions)."""
    assert rows.any()
    touched = sorted(new)
    others = [j for j in range(before.shape[-1]) if j not in touched]
    assert torch.equal(after[..., others], before[..., others])
    assert torch.equal(after[~rows], before[~rows])
    for j, v in new.items():
        assert torch.allclose(after[rows][:, j], v.expand(int(rows.sum())), atol=ATOL, rtol=0), j


# -- set / on ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope,layer", [("prompt", 0), ("image", 0), ("prompt", 1), ("image", 1)])
def test_set_writes_the_value_and_reads_it_back(exact_session, enc, where, scope, layer) -> None:  # noqa: ANN001
    """set cat = v: z_i = v * scale * w_i / sum(w+^2) over positive weights, so cat reads v; dog's
    negative-weight latent goes to 0. (image at layer 1 is the TopK dictionary.)"""
    v = 20.0
    rows = where[scope]
    before, after = steered_input(exact_session, HEAD + f"steer {scope} at layer {layer} {{ set cat = {v}\nset dog = 3 }}", enc, layer)
    check(before, after, rows, {3: torch.tensor(v * 0.25 / 1.25 - b(3)), 5: torch.tensor(v * 0.25 / 1.25 * 0.5 - b(5)),
                                10: torch.tensor(3 * 0.7 - b(10)), 11: torch.tensor(-b(11))})
    topk = (scope, layer) == ("image", 1)
    assert torch.allclose(read("cat", after[rows], topk), torch.tensor(v), atol=1e-4)
    assert torch.allclose(read("dog", after[rows], topk), torch.tensor(3.0), atol=1e-4)


def test_on_is_set_to_one(exact_session, enc, where) -> None:  # noqa: ANN001
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { on cat\non word }", enc, 0)
    rows = where["prompt"]
    check(before, after, rows, {3: torch.tensor(0.2 - b(3)), 5: torch.tensor(0.1 - b(5)), 30: torch.tensor(1.0 - b(30))})
    assert torch.allclose(read("cat", after[rows]), torch.tensor(1.0), atol=1e-5)


# -- scale ------------------------------------------------------------------------------------------


def test_scale_multiplies_every_latent(exact_session, enc, where) -> None:  # noqa: ANN001
    before, after = steered_input(exact_session, HEAD + "steer image at layer 0 { scale cat by 0.5\nscale dog by 3 }", enc, 0)
    rows = where["image"]
    h = before[rows]
    check(before, after, rows, {j: h[:, j] + (k - 1) * z(h, j) for j, k in ((3, 0.5), (5, 0.5), (10, 3.0), (11, 3.0))})
    assert torch.allclose(read("cat", after[rows]), 0.5 * read("cat", h), atol=1e-5)
    assert torch.allclose(read("dog", after[rows]), 3 * read("dog", h), atol=1e-5)


# -- clamp ------------------------------------------------------------------------------------------


def test_clamp_moves_only_what_is_outside(exact_session, enc, where) -> None:  # noqa: ANN001
    """Inside [lo, hi]: bit for bit unchanged; below / above: scaled to read lo / hi exactly."""
    rows = where["image"]
    before, _ = steered_input(exact_session, HEAD + "trace cat", enc, 0)
    a = read("cat", before[rows])
    u = a.unique()  # sorted
    assert len(u) > 8
    n = len(u)
    lo, hi = float(u[n // 4] + u[n // 4 + 1]) / 2, float(u[3 * n // 4] + u[3 * n // 4 + 1]) / 2  # halfway: no ties
    _, after = steered_input(exact_session, HEAD + f"steer image at layer 0 {{ clamp cat to [{lo!r}, {hi!r}] }}", enc, 0)
    target = a.clamp(lo, hi)
    inside, moved = a == target, a != target
    assert inside.any() and (a < lo).any() and (a > hi).any()
    h, h2 = before[rows], after[rows]
    assert torch.equal(h2[inside], h[inside])
    f = (target / a)[moved]
    for j in (3, 5):
        assert torch.allclose(h2[moved][:, j], h[moved][:, j] + (f - 1) * z(h[moved], j), atol=ATOL, rtol=0)
    others = [j for j in range(32) if j not in (3, 5)]
    assert torch.equal(after[..., others], before[..., others]) and torch.equal(after[~rows], before[~rows])
    assert torch.allclose(read("cat", h2), target, atol=1e-4)


def test_clamp_of_a_switched_off_concept_sets_it(exact_session, enc, where) -> None:  # noqa: ANN001
    """Edits run in program order: after `off`, cat reads 0, below [1, 2]: clamp sets it to 1."""
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { off cat\nclamp cat to [1, 2] }", enc, 0)
    check(before, after, rows, {3: torch.tensor(0.2 - b(3)), 5: torch.tensor(0.1 - b(5))})
    assert torch.allclose(read("cat", after[rows]), torch.tensor(1.0), atol=1e-5)


# -- add --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,k,dirn,scale", [("cat", 3.0, {3: 1.0, 5: 0.5}, 0.25), ("dog", -2.0, {10: 1.0, 11: -0.5}, 0.7)])
def test_add_moves_by_k_scale_unit_direction(exact_session, enc, where, name, k, dirn, scale) -> None:  # noqa: ANN001
    """add F * k: h += k * scale * d / |d|, d = sum_i w_i W_dec[i] (here w_i e_i), whatever F reads."""
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + f"steer prompt at layer 0 {{ add {name} * {k} }}", enc, 0)
    norm = math.sqrt(sum(w * w for w in dirn.values()))
    check(before, after, rows, {j: before[rows][:, j] + k * scale * w / norm for j, w in dirn.items()})


# -- off --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["prompt", "image"])
def test_off_zeroes_only_positive_weight_latents(exact_session, enc, where, scope) -> None:  # noqa: ANN001
    """off dog: z_10 -> 0; z_11 (weight -0.5, evidence against dog) is kept, bit for bit. On image
    positions without a background state the latent fallback does the same where dog is present
    (everywhere here: dog reads ~1.4 > 0.3)."""
    rows = where[scope]
    before, after = steered_input(exact_session, HEAD + f"steer {scope} at layer 0 {{ off dog\noff cat }}", enc, 0)
    check(before, after, rows, {10: torch.tensor(-b(10)), 3: torch.tensor(-b(3)), 5: torch.tensor(-b(5))})
    assert torch.allclose(read("cat", after[rows]), torch.tensor(0.0), atol=1e-5)


# -- replace ----------------------------------------------------------------------------------------


def test_replace_on_text_where_present(exact_session, enc, where) -> None:  # noqa: ANN001
    """replace fish with dog where fish > 2.0 (its threshold): fish's latent -> 0, dog set to
    fish's activation; elsewhere untouched."""
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 1 { replace fish with dog }", enc, 1)
    fish = torch.zeros(before.shape[:2])
    fish[where["prompt"]] = read("fish", before[where["prompt"]])
    rows = where["prompt"] & (fish > 2.0)
    assert 0 < int(rows.sum()) < int(where["prompt"].sum())
    check(before, after, rows, {25: torch.tensor(-b(25)), 10: 0.7 * fish[rows] - b(10), 11: torch.tensor(-b(11))})
    assert torch.allclose(read("dog", after[rows]), fish[rows], atol=1e-5)


# -- compounds --------------------------------------------------------------------------------------


def test_weighted_sum_edits_scale_each_term_by_its_weight(exact_session, enc, where) -> None:  # noqa: ANN001
    """set (0.5*cat + 0.5*dog) = 4 sets cat to 0.5*4 and dog to 0.5*4 (so the sum reads
    4 * (0.5^2 + 0.5^2) = 2); add mix * 2 adds 2 * 0.5 * each term's unit step."""
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { set mix = 4 }", enc, 0)
    check(before, after, rows, {3: torch.tensor(2 * 0.25 / 1.25 - b(3)), 5: torch.tensor(2 * 0.25 / 1.25 * 0.5 - b(5)),
                                10: torch.tensor(2 * 0.7 - b(10)), 11: torch.tensor(-b(11))})
    h = after[rows]
    assert torch.allclose(read("cat", h), torch.tensor(2.0), atol=1e-5) and torch.allclose(read("dog", h), torch.tensor(2.0), atol=1e-5)
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { add mix * 2 }", enc, 0)
    h = before[rows]
    nc, nd = math.sqrt(1.25), math.sqrt(1.25)
    check(before, after, rows, {3: h[:, 3] + 2 * 0.5 * 0.25 / nc, 5: h[:, 5] + 2 * 0.5 * 0.25 * 0.5 / nc,
                                10: h[:, 10] + 2 * 0.5 * 0.7 / nd, 11: h[:, 11] - 2 * 0.5 * 0.7 * 0.5 / nd})


def test_clamp_of_a_weighted_sum_clamps_each_term(exact_session, enc, where) -> None:  # noqa: ANN001
    """clamp (0.5*cat + 0.5*dog) to [1, 2]: cat (~12) is scaled to read 2, dog (~1.4, inside) is
    left bit for bit; the weights play no part."""
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { clamp mix to [1, 2] }", enc, 0)
    h = before[rows]
    assert (read("cat", h) > 2).all() and ((read("dog", h) > 1) & (read("dog", h) < 2)).all()
    f = 2 / read("cat", h)
    check(before, after, rows, {3: h[:, 3] + (f - 1) * z(h, 3), 5: h[:, 5] + (f - 1) * z(h, 5)})
    assert torch.allclose(read("cat", after[rows]), torch.tensor(2.0), atol=1e-5)


def test_union_edits_apply_to_each_member(exact_session, enc, where) -> None:  # noqa: ANN001
    rows = where["image"]
    before, after = steered_input(exact_session, HEAD + "steer image at layer 0 { set pet = 2\nscale (word | fish) by 2 }", enc, 0)
    h = before[rows]
    check(before, after, rows, {3: torch.tensor(2 * 0.25 / 1.25 - b(3)), 5: torch.tensor(2 * 0.25 / 1.25 * 0.5 - b(5)),
                                10: torch.tensor(2 * 0.7 - b(10)), 11: torch.tensor(-b(11)),
                                30: h[:, 30] + z(h, 30), 25: h[:, 25] + z(h, 25)})
    a = torch.maximum(read("cat", after[rows]), read("dog", after[rows]))
    assert torch.allclose(a, torch.tensor(2.0), atol=1e-5)


# -- how groups read: traces ------------------------------------------------------------------------


def test_every_read_mode_traces_by_hand(exact_session, enc, where) -> None:  # noqa: ANN001
    """Traced activations of code (ReLU and TopK), pre and linear groups and of compounds, at both
    layers and on image and text positions, equal the formulas (0 on <s> and padding)."""
    from runtime_support import states

    with exact_session.steer(HEAD + "trace cat, dog, word, moon, star, ghost, mix, pet") as st, torch.no_grad():
        exact_session.model(**enc)
    hs = states(exact_session.bundle, enc, [0, 1])
    text = where["prompt"]
    for layer in (0, 1):
        h = hs[layer]
        for m, rows in (("image", where["image"]), ("text", text)):
            topk = (layer, m) == (1, "image")
            want = {n: read(n, h[rows], topk) for n in ("cat", "dog", "word", "moon", "star", "ghost")}
            want["mix"] = 0.5 * want["cat"] + 0.5 * want["dog"]
            want["pet"] = torch.maximum(want["cat"], want["dog"])
            for n, v in want.items():
                got = st.trace.acts[n][layer][:, : rows.shape[1]]
                assert torch.allclose(got[rows], v, atol=1e-5), (n, layer, m)
            assert torch.equal(want["ghost"], torch.zeros_like(want["ghost"]))
            assert (want["moon"] < -2.5).all()  # read before the ReLU: ~ -2.6, though its codes are 0
        pad = ~(where["image"] | text)
        assert torch.equal(st.trace.acts["cat"][layer][:, : pad.shape[1]][pad], torch.zeros(int(pad.sum())))


# -- pre-activation groups: value edits act on the codes (docs/runtime.md) ---------------------------


def test_set_on_pre_and_linear_groups_writes_the_codes(exact_session, enc, where) -> None:  # noqa: ANN001
    """On a group read before the nonlinearity, `set F = v` writes the codes as for a code group
    (z_i = v * scale * w_i / sum(w+^2) over positive weights, negative-weight latents 0): its code
    activation sum_i w_i z_i / scale is v; its pre / linear read is what the edited state gives."""
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { set moon = 2\nset star = 3 }", enc, 0)
    h = before[rows]
    z20, z21 = 2 / 0.89 * 0.5, 2 / 0.89 * 0.8  # moon: weights (0.5, 0.8); its codes were 0 (bias -5)
    check(before, after, rows, {20: h[:, 20] + z20, 21: h[:, 21] + z21, 22: torch.tensor(1.5 - b(22)), 23: torch.tensor(-b(23))})
    h2 = after[rows]
    # moon's codes were 0 with p_i = h_i - 5 < 0: the write moves p_i by z'_i, not to z'_i (reads ~ -2, not 2)
    moon = torch.maximum(0.5 * (h[:, 20] + z20 - 5) - 0.1, 0.8 * (h[:, 21] + z21 - 5) + 0.05)
    assert torch.allclose(read("moon", h2), moon, atol=1e-5) and (moon < 0).all()
    assert torch.allclose(read("star", h2), torch.tensor(2 * 1.5 - 0 + 0.05), atol=1e-5)  # code activation 3, + offset


def test_clamp_on_a_linear_group_clamps_its_code_activation(exact_session, enc, where) -> None:  # noqa: ANN001
    rows = where["prompt"]
    before, after = steered_input(exact_session, HEAD + "steer prompt at layer 0 { clamp star to [0, 1] }", enc, 0)
    h = before[rows]
    code = 2 * z(h, 22) - z(h, 23)  # ~2 > 1 everywhere
    assert (code > 1).all()
    f = 1 / code
    check(before, after, rows, {22: h[:, 22] + (f - 1) * z(h, 22), 23: h[:, 23] + (f - 1) * z(h, 23)})
    h2 = after[rows]
    assert torch.allclose(2 * z(h2, 22) - z(h2, 23), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(read("star", h2), torch.tensor(1.05), atol=1e-5)

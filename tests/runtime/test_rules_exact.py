"""`when` rules, per sample: connectives, `in prompt`, and a rule that switches on mid-generation.

On the identity-like concept set (`runtime_support.build_exact_concept_set`): a concept's
activation is a formula in the hidden state, so which samples a rule holds for, and from which
output position, is computed by hand from an unsteered run.
"""

from __future__ import annotations

import pytest
import torch
from runtime_support import EXACT_BIAS, EXACT_GROUPS, encode, gen_ids, kinds, states, steered_input

from steerlang.runtime.session import load_image
from steerlang.world.vocab import DESCRIBE_PROMPTS

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS)
BODY = "steer prompt at layer 0 { add word * 3 }"
N = 10  # generated tokens


@pytest.fixture(scope="module")
def pics(images):  # noqa: ANN001, ANN201
    return [load_image(p) for p in images]


@pytest.fixture(scope="module")
def enc(bundle, pics):  # noqa: ANN001, ANN201
    return encode(bundle, pics)


def changed_samples(session, prog: str, enc: dict, layer: int = 0) -> list[bool]:  # noqa: ANN001
    before, after = steered_input(session, HEAD + prog, enc, layer)
    return (after != before).flatten(1).any(1).tolist()


def image_max(session, enc: dict, name: str) -> torch.Tensor:  # noqa: ANN001
    """[B] max over image positions of a code concept at layer 0 (unsteered), by hand."""
    lat, w, scale, *_ = EXACT_GROUPS[name]
    h = states(session.bundle, enc, [0])[0]
    a = sum(wi * (h[..., j] + EXACT_BIAS.get(j, 1.0)).relu() for j, wi in zip(lat, w, strict=True)) / scale
    img, _ = kinds(session, enc)
    return a.masked_fill(~img, float("-inf")).amax(1)


def between(lo: float, hi: float) -> str:
    assert lo < hi
    return repr((lo + hi) / 2)


def test_and_or_not_per_sample(exact_session, enc) -> None:  # noqa: ANN001
    """A (cat > tA in image) holds for two samples, B (dog > tB in image) for one: `A or B` and
    `A and B` then differ on at least one sample, and each connective is pinned per sample."""
    ca, da = image_max(exact_session, enc, "cat"), image_max(exact_session, enc, "dog")
    sa, sd = ca.sort().values.tolist(), da.sort().values.tolist()
    A = f"cat > {between(sa[0], sa[1])} in image"
    B = f"dog > {between(sd[1], sd[2])} in image"
    a, bb = (ca > (sa[0] + sa[1]) / 2).tolist(), (da > (sd[1] + sd[2]) / 2).tolist()
    assert sum(a) == 2 and sum(bb) == 1
    cases = {
        A: a,
        B: bb,
        f"{A} and {B}": [x and y for x, y in zip(a, bb, strict=True)],
        f"{A} or {B}": [x or y for x, y in zip(a, bb, strict=True)],
        f"not {A}": [not x for x in a],
        f"{A} and not {B}": [x and not y for x, y in zip(a, bb, strict=True)],
        f"not ({A} or {B})": [not (x or y) for x, y in zip(a, bb, strict=True)],
        f"({A} or {B}) and not ({A} and {B})": [x != y for x, y in zip(a, bb, strict=True)],
    }
    assert cases[f"{A} and {B}"] != cases[f"{A} or {B}"]
    for cond, want in cases.items():
        assert changed_samples(exact_session, f"when {cond} {{ {BODY} }}", enc) == want, cond


@pytest.fixture(scope="module")
def enc3(bundle, pics):  # noqa: ANN001, ANN201
    """Three samples with three prompts (left-padded to the longest): prompt maxima differ per sample."""
    return bundle.encode(pics, list(DESCRIBE_PROMPTS))


def prompt_rule(session, enc: dict) -> tuple[int, list[float]]:  # noqa: ANN001
    """(coordinate i, [B] max of x_i over each sample's prompt at layer 0) with three well-separated maxima."""
    h = states(session.bundle, enc, [0])[0]
    _, prompt = kinds(session, enc)
    for i in range(32):
        m = (h[..., i] + EXACT_BIAS.get(i, 1.0)).masked_fill(~prompt, float("-inf")).amax(1)
        s = m.sort().values
        if float((s[1:] - s[:-1]).min()) > 1e-4:
            return i, m.tolist()
    raise AssertionError("no coordinate separates the three prompts")


def test_in_prompt_rules_per_sample(exact_session, bundle, enc3) -> None:  # noqa: ANN001
    i, m = prompt_rule(exact_session, enc3)
    s = sorted(m)
    for op, t in ((">", between(s[0], s[1])), ("<", between(s[1], s[2])), (">", between(s[1], s[2]))):
        want = [(v > float(t)) if op == ">" else (v < float(t)) for v in m]
        assert 0 < sum(want) < 3
        assert changed_samples(exact_session, f"when concept \"x{i}\" {op} {t} in prompt {{ {BODY} }}", enc3) == want, (op, t)
    # The prompt's max is remembered at every decode step: the output edit steers exactly those samples.
    t = between(s[0], s[1])
    want = [v > float(t) for v in m]
    base = gen_ids(bundle, enc3, n=N)
    with exact_session.steer(HEAD + f"when concept \"x{i}\" > {t} in prompt {{ steer output at layer 0 {{ add cat * 2 }} }}"):
        cached = gen_ids(bundle, enc3, n=N)
        uncached = gen_ids(bundle, enc3, n=N, use_cache=False)
    assert torch.equal(cached, uncached)
    assert [not torch.equal(cached[b], base[b]) for b in range(3)] == want


def output_switch(session, bundle, enc: dict) -> tuple[int, float, list[int | None], torch.Tensor]:  # noqa: ANN001
    """A coordinate i and threshold T such that `x_i > T in output` is false at output positions 0
    and 1 of every sample (unsteered run) and turns true later in at least one: (i, T, per sample
    the first output position where it holds or None, the unsteered tokens)."""
    base = gen_ids(bundle, enc, n=N)
    full = {**enc, "input_ids": torch.cat([enc["input_ids"], base], 1),
            "attention_mask": torch.cat([enc["attention_mask"], torch.ones_like(base)], 1)}
    p = enc["input_ids"].shape[1]
    out = states(bundle, full, [0])[0][:, p : p + N - 1]  # generated tokens 0..N-2 are fed back to the model
    found = []
    for i in range(32):
        run = (out[..., i] + EXACT_BIAS.get(i, 1.0)).cummax(1).values  # [B, N-1] the rule's store after each position
        for j in range(2, N - 4):
            for b in range(run.shape[0]):
                if run[b, j] > run[b, j - 1]:
                    t = float(run[b, j - 1] + run[b, j]) / 2
                    first = [int((r > t).nonzero()[0]) if bool((r > t).any()) else None for r in run]
                    if all(f is None or f >= 2 for f in first):
                        found.append((None not in first, j, i, t, first))
    assert found, "no coordinate's running max over the output rises after position 1"
    _, _j, i, t, first = min(found)  # prefer a rule that stays false for some sample, then an early switch
    return i, t, first, base


@torch.no_grad()
def gen_logits(bundle, enc: dict, **kw) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """(tokens [B, N], the logits of every step [B, N, vocab]) of a greedy generation."""
    out = bundle.model.generate(**enc, max_new_tokens=N, do_sample=False, pad_token_id=bundle.tokenizer.pad_token_id,
                                output_logits=True, return_dict_in_generate=True, **kw)
    return out.sequences[:, enc["input_ids"].shape[1]:], torch.stack(out.logits, 1)


@pytest.mark.parametrize("k", [2.0, 0.05])
def test_rule_switching_on_mid_generation(exact_session, bundle, enc, k) -> None:  # noqa: ANN001
    """`when x_i > T in output`: false at the first output positions, true from position s (per
    sample). The logits of steps 0..s are the unsteered ones bit for bit (the edit at position P+s
    first shapes token s+1), those of step s+1 differ (with k = 2 the tokens after s change too),
    samples where it never holds are unchanged, and generating without the KV cache (each step
    re-runs the whole sequence, earlier output positions included) gives the same tokens and the
    same logits at every step: a re-run gates each position as the cached step that first computed
    it did, not with the rule's value at the last position (with k = 0.05 the tokens here stay the
    same either way: only the logits show that)."""
    i, t, first, _ = output_switch(exact_session, bundle, enc)
    base, lb = gen_logits(bundle, enc)
    with exact_session.steer(HEAD + f"when concept \"x{i}\" > {t!r} in output {{ steer output at layer 0 {{ add cat * {k} }} }}"):
        cached, lc = gen_logits(bundle, enc)
        uncached, lu = gen_logits(bundle, enc, use_cache=False)
    assert torch.equal(cached, uncached), (first, cached, uncached)
    assert torch.allclose(lc, lu, atol=1e-4, rtol=0), (lc - lu).abs().amax(-1)  # cache vs no cache: ~1e-6 apart
    switched = 0
    for b, s in enumerate(first):
        if s is None:
            assert torch.equal(lc[b], lb[b]) and torch.equal(cached[b], base[b])
        else:
            assert torch.equal(lc[b, : s + 1], lb[b, : s + 1]) and torch.equal(cached[b, : s + 1], base[b, : s + 1]), (b, s)
            assert (lc[b, s + 1] - lb[b, s + 1]).abs().max() > 1e-3, (b, s)
            switched += not torch.equal(cached[b, s + 1 :], base[b, s + 1 :])
    assert switched or k < 1, (first, base, cached)

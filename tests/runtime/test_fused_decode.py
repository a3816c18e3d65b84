"""Decode steps through one fused map per layer (`hooks._Fused`): the same states as the general path.

At a decode step every position is an output position, so a layer whose edits are off / on / set /
scale / add without a rule is one affine map on the latents plus one added vector. These tests run
every such program twice, fused and through the general path (`Steerer(fuse=False)`), and compare
the state entering each edited block at every decode step, bit for bit; they check by hand what a
fused step writes; and that programs the map cannot express take the general path.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from runtime_support import encode, gen_ids

from steerlang.runtime.hooks import Steerer, _Fused
from steerlang.runtime.session import load_image

HEAD = 'let cat = concept "cat"\nlet dog = concept "dog"\nlet word = concept "word"\nlet pet = 0.5*cat + 2*dog\n'


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def decode_states(session, prog: str, enc: dict, layers: list[int], *, fuse: bool, dense: bool = False,  # noqa: ANN001
                  n: int = 6) -> tuple[torch.Tensor, dict[int, list[torch.Tensor]]]:
    """(generated ids, {layer: the state entering it at each decode step, after the steering hook})."""
    seen: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
    plan = session.plan(session.compile(HEAD + prog), trace=False, dense=dense)
    st = Steerer(session.adapter, plan, trace=False, fuse=fuse)
    handles = []
    with st:
        for la in layers:  # registered after the steering hooks: they see the edited state
            module, is_pre = session.adapter.hook_point(la)
            if is_pre:
                def capture(_m, args, kwargs, la=la):  # noqa: ANN001, ANN202
                    if st.decoding:
                        seen[la].append((args[0] if args else kwargs["hidden_states"]).clone())
                handles.append(module.register_forward_pre_hook(capture, with_kwargs=True))
            else:  # the last layer: the last block's output
                def capture_out(_m, _args, output, la=la):  # noqa: ANN001, ANN202
                    if st.decoding:
                        seen[la].append((output[0] if isinstance(output, tuple) else output).clone())
                handles.append(module.register_forward_hook(capture_out))
        try:
            ids = gen_ids(session.bundle, enc, n=n)
        finally:
            for h in handles:
                h.remove()
    return ids, seen


FUSABLE = [
    "steer all { set dog = 2 }",
    "steer output { off cat\nscale word by 3\nadd dog * 2 }",
    "steer all { set dog = 2\nscale dog by 0.5\noff cat\non word }",
    "steer output { set pet = 1.5 }",
    "steer output { add pet * 3\nadd word * -2 }",
    "steer image { off cat }\nsteer prompt { set dog = 9 }\nsteer output { scale dog by 4 }",
    "steer all at layer 1 { off dog }\nsteer output at layer 0 { set cat = 3 }",
]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("prog", FUSABLE)
def test_fused_decode_steps_equal_the_general_path(session, enc, prog: str, dense: bool) -> None:  # noqa: ANN001
    ids_f, fused = decode_states(session, prog, enc, [0, 1, 2], fuse=True, dense=dense)
    ids_g, general = decode_states(session, prog, enc, [0, 1, 2], fuse=False, dense=dense)
    assert torch.equal(ids_f, ids_g)
    for layer in (0, 1, 2):
        assert len(fused[layer]) == len(general[layer]) == 5  # 6 tokens: a prefill and 5 decode steps
        for a, b in zip(fused[layer], general[layer], strict=True):
            assert torch.equal(a, b), (prog, layer)
    plan = session.plan(session.compile(HEAD + prog), trace=False, dense=dense)
    with Steerer(session.adapter, plan, trace=False), torch.no_grad():
        session.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert all(f is not None for f in plan.fused.values()) and plan.fused  # the fused maps ran


def test_a_fused_step_differs_from_no_steering(session, enc) -> None:  # noqa: ANN001
    _ids, steered = decode_states(session, "steer output { set dog = 2 }", enc, [1], fuse=True)
    _ids, plain = decode_states(session, "trace cat", enc, [1], fuse=True)
    assert not torch.equal(steered[1][0], plain[1][0])


def test_a_fused_set_writes_the_hand_computed_codes(exact_session, bundle, enc) -> None:  # noqa: ANN001
    """Identity-like SAEs (runtime_support): latent 30 reads h_30 + 2, `set word = 1.5` makes it
    read 1.5, so h_30 becomes -0.5 at every decode step and nothing else moves; `add cat * 2` adds
    2 * 0.25 * d/|d| with d = e_3 + 0.5 e_5 (cat's decoder rows with its weights)."""
    prog = 'let word = concept "word"\nlet cat = concept "cat"\nsteer output at layer 1 { set word = 1.5\nadd cat * 2 }'
    seen = _decode_pairs(exact_session, bundle, enc, prog, layer=1)
    d = torch.zeros(32)
    d[3], d[5] = 1.0, 0.5
    add = 2 * 0.25 * d / d.norm()
    for h, h2_ in seen:
        want = h.clone()
        want[..., 30] = -0.5
        want = want + add
        assert torch.allclose(h2_, want, atol=1e-6)


@pytest.mark.parametrize("prog", [
    "when word > 0.1 in output { steer output { scale dog by 3 } }",
    "steer output { replace cat with dog }",
    "steer output { clamp dog to [0, 0.1] }",
    "steer output tokens 2..4 { set dog = 3 }",
])
def test_programs_the_map_cannot_express_take_the_general_path(session, enc, prog: str) -> None:  # noqa: ANN001
    plan = session.plan(session.compile(HEAD + prog), trace=False)
    with Steerer(session.adapter, plan, trace=False), torch.no_grad():
        session.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert plan.fused and all(f is None for f in plan.fused.values())


def test_a_traced_layer_takes_the_general_path(session, enc) -> None:  # noqa: ANN001
    plan = session.plan(session.compile(HEAD + "steer output at layer 1 { set dog = 2 }\ntrace cat"), trace=True)
    with Steerer(session.adapter, plan, trace=True) as st, torch.no_grad():
        session.model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert plan.fused[(1, True)] is None
    assert st.trace is not None and st.trace.acts["cat"][1].shape[1] == enc["input_ids"].shape[1] + 3


def test_the_map_is_built_once_per_plan(session, enc) -> None:  # noqa: ANN001
    plan = session.plan(session.compile(HEAD + "steer output { set dog = 2 }"), trace=False)
    for _ in range(2):
        with Steerer(session.adapter, plan, trace=False), torch.no_grad():
            session.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
        built = dict(plan.fused)
    assert all(isinstance(f, _Fused) for f in built.values())
    with Steerer(session.adapter, plan, trace=False), torch.no_grad():
        session.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert all(plan.fused[k] is built[k] for k in built)


@pytest.mark.parametrize("prog", ["steer image where cat > 0.15 { off cat }", "steer prompt { set dog = 5 }",
                                  "steer all { scale dog by 1 }", "steer image region [0:0.5, 0.25:1] { off cat }"])
def test_nothing_in_scope_at_a_decode_step_leaves_it_untouched(session, enc, prog: str) -> None:  # noqa: ANN001
    """Image, prompt and identity edits compute nothing at decode steps; the steps' states equal
    those of the general path (which changes nothing there either)."""
    ids_f, fused = decode_states(session, prog, enc, [0, 1], fuse=True)
    ids_g, general = decode_states(session, prog, enc, [0, 1], fuse=False)
    assert torch.equal(ids_f, ids_g)
    for layer in (0, 1):
        for a, b in zip(fused[layer], general[layer], strict=True):
            assert torch.equal(a, b)
    plan = session.plan(session.compile(HEAD + prog), trace=False)
    with Steerer(session.adapter, plan, trace=False), torch.no_grad():
        session.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert plan.fused and all(f is not None and f.sae is None for f in plan.fused.values())


def test_the_sparse_path_never_runs_the_full_encode(session, enc, monkeypatch) -> None:  # noqa: ANN001
    """A ReLU dictionary's decode steps encode only the plan's latents; `--dense` the whole SAE."""
    from steerlang.dictionary.sae import SAE

    calls: list[int] = []
    real = SAE.encode

    def counting(self, x):  # noqa: ANN001, ANN202
        calls.append(x.shape[0])
        return real(self, x)

    monkeypatch.setattr(SAE, "encode", counting)
    prog = "steer output at layer 0 { set dog = 2 }"  # layer 0: ReLU text SAE
    decode_states(session, prog, enc, [0], fuse=True)
    assert calls == []
    decode_states(session, prog, enc, [0], fuse=True, dense=True)
    assert len(calls) == 5  # each decode step one full encode (the prefill has no output position to edit)


def test_a_union_adds_and_sets_each_member_at_full_weight(exact_session, bundle, enc) -> None:  # noqa: ANN001
    """`add (cat | dog) * 2` adds 2 * scale * d/|d| for each member (weight 1 in a union, not the
    sum's term weight); `set (cat | dog) = 1` writes each member's set codes for 1. Identity-like
    SAEs: cat d = e_3 + 0.5 e_5 (scale 0.25), dog d = e_10 - 0.5 e_11 (scale 0.7); dog's set codes
    for 1: 0.7 / 1 * (1, 0) on latents (10, 11), so h_10 = 0.7 - 2 (bias 2), h_11 unchanged."""
    head = 'let cat = concept "cat"\nlet dog = concept "dog"\n'
    seen = _decode_pairs(exact_session, bundle, enc, head + "steer output at layer 1 { add (cat | dog) * 2 }", layer=1)
    cat, dog = torch.zeros(32), torch.zeros(32)
    cat[3], cat[5] = 1.0, 0.5
    dog[10], dog[11] = 1.0, -0.5
    want_add = 2 * 0.25 * cat / cat.norm() + 2 * 0.7 * dog / dog.norm()
    for h, h2 in seen:
        assert torch.allclose(h2, h + want_add, atol=1e-6)
    seen = _decode_pairs(exact_session, bundle, enc, head + "steer output at layer 1 { set (cat | dog) = 1 }", layer=1)
    for _h, h2 in seen:
        assert torch.allclose(h2[..., 10], torch.full_like(h2[..., 10], 0.7 - 2.0), atol=1e-6)
        assert torch.allclose(h2[..., 11], torch.full_like(h2[..., 11], -2.0), atol=1e-6)
        # cat: codes 1 * 0.25 / 1.25 * (1, 0.5) on latents (3, 5), both with bias 2
        assert torch.allclose(h2[..., 3], torch.full_like(h2[..., 3], 0.2 - 2.0), atol=1e-6)
        assert torch.allclose(h2[..., 5], torch.full_like(h2[..., 5], 0.1 - 2.0), atol=1e-6)


def _decode_pairs(sess, bundle, enc: dict, prog: str, layer: int) -> list[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ANN001
    """(state entering `layer` before the steering hook, after it) at each decode step of a
    4-token generation, on the fused path (checked)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    before: list[torch.Tensor] = []
    st = sess.steer(prog, trace=False)

    def early(_m, args, kwargs):  # noqa: ANN001, ANN202
        before.append((args[0] if args else kwargs["hidden_states"]).clone())

    def late(_m, args, kwargs):  # noqa: ANN001, ANN202
        if st.decoding:
            seen.append((before[-1], (args[0] if args else kwargs["hidden_states"]).clone()))

    block = sess.adapter.decoder_layers()[layer]
    h1 = block.register_forward_pre_hook(early, with_kwargs=True, prepend=True)
    try:
        with st:
            h2 = block.register_forward_pre_hook(late, with_kwargs=True)
            try:
                gen_ids(bundle, enc, n=4)
            finally:
                h2.remove()
    finally:
        h1.remove()
    assert len(seen) == 3 and st.plan.fused[(layer, False)] is not None
    return seen


def test_a_decode_step_of_several_tokens(session, enc) -> None:  # noqa: ANN001
    """A decode call with two new tokens (as assisted decoding makes) is fused too: the same states
    as the general path at both positions."""
    prog = "steer output { add dog * 2\nset cat = 1 }"
    outs = {}
    for fuse in (True, False):
        plan = session.plan(session.compile(HEAD + prog), trace=False)
        seen: list[torch.Tensor] = []
        with Steerer(session.adapter, plan, trace=False, fuse=fuse) as st, torch.no_grad():
            def capture(_m, args, kwargs, seen=seen, st=st):  # noqa: ANN001, ANN202
                if st.decoding:
                    seen.append((args[0] if args else kwargs["hidden_states"]).clone())
            h = session.adapter.decoder_layers()[1].register_forward_pre_hook(capture, with_kwargs=True)
            try:
                first = session.model(**enc, use_cache=True)
                new = torch.tensor([[5, 6]] * enc["input_ids"].shape[0])
                mask = torch.cat([enc["attention_mask"], torch.ones_like(new)], dim=1)
                # transformers 5.24 calls the cache keyword `cache` (before: `past_key_values`)
                key = "cache" if "cache" in inspect.signature(type(session.model).forward).parameters else "past_key_values"
                session.model(input_ids=new, attention_mask=mask, use_cache=True, **{key: first.past_key_values})
            finally:
                h.remove()
        assert len(seen) == 1 and seen[0].shape[1] == 2
        outs[fuse] = seen[0]
        if fuse:
            assert plan.fused[(1, False)] is not None
    assert torch.equal(outs[True], outs[False])


class _Subclassed:
    """Gives one SAE of a concept set a subclass that overrides `encode_latents` and `decode_delta`
    (as a user's own SAE class may), counting the calls; the fused map must call them."""

    def __init__(self, sae) -> None:  # noqa: ANN001
        self.sae, self.calls = sae, {"encode_latents": 0, "decode_delta": 0}
        base, calls = type(sae), self.calls

        class Counting(base):  # type: ignore[misc, valid-type]
            def encode_latents(self, x, idx):  # noqa: ANN001, ANN202
                calls["encode_latents"] += 1
                return base.encode_latents(self, x, idx)

            def decode_delta(self, delta_z, idx):  # noqa: ANN001, ANN202
                calls["decode_delta"] += 1
                return base.decode_delta(self, delta_z, idx)

        self.cls, self.base = Counting, base

    def __enter__(self) -> dict:
        self.sae.__class__ = self.cls
        return self.calls

    def __exit__(self, *_exc: object) -> None:
        self.sae.__class__ = self.base


def test_an_sae_class_with_its_own_encode_and_decode_is_called(session, enc) -> None:  # noqa: ANN001
    prog = "steer output at layer 0 { set dog = 2\nscale cat by 3 }"
    _ids, general = decode_states(session, prog, enc, [0], fuse=False)
    with _Subclassed(session.concepts.sae(0, "text")) as calls:
        _ids, fused = decode_states(session, prog, enc, [0], fuse=True)
    assert calls["encode_latents"] == 5 and calls["decode_delta"] == 5  # one of each per decode step
    for a, b in zip(fused[0], general[0], strict=True):
        assert torch.equal(a, b)

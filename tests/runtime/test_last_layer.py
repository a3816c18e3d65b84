"""Edits at the last layer (the last block's output, a forward hook rather than a pre-hook): the
edit is written, only where it applies, and a block that returns a tuple gets a tuple back with its
other items kept. Written with mutation testing (benchmarks/MUTATION.md): no test edited there."""

from __future__ import annotations

import pytest
import torch
from runtime_support import captured, encode, kinds

from steerlang.runtime.session import load_image

PROG = 'let word = concept "word"\nsteer prompt at layer 2 { set word = 3 }'


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def last_output(session, enc: dict, prog: str | None) -> torch.Tensor:  # noqa: ANN001
    return captured(session, enc, prog, -1, output=True)


def test_an_edit_at_the_last_layer_is_written_where_it_applies(session, enc) -> None:  # noqa: ANN001
    img, prompt = kinds(session, enc)
    before, after = last_output(session, enc, None), last_output(session, enc, PROG)
    changed = (after != before).any(-1)
    assert torch.equal(changed, prompt)
    # word is latent 30 of the layer-2 text SAE (weight 1, scale 1): set to 3, the SAE's error kept
    sae = session.concepts.sae(2, "text")
    with torch.no_grad():
        z = sae.encode(before[prompt].float())[:, 30]
        want = before[prompt] + (3.0 - z)[:, None] * sae.W_dec[30]
    assert torch.allclose(after[prompt], want, atol=1e-5)


def test_a_block_returning_a_tuple_gets_a_tuple(session, enc) -> None:  # noqa: ANN001
    """The hook called as a block returning (hidden, extra) would call it: the same edit, extra kept;
    and None (no change) where the call is not one the steerer saw."""
    after = last_output(session, enc, PROG)
    before = last_output(session, enc, None)
    with session.steer(PROG) as st, torch.no_grad():
        session.model(**enc)  # the steerer records this call's positions
        hook = st._post(2)
        got = hook(None, (), (before.clone(), "extra", 7))
        assert isinstance(got, tuple) and got[1:] == ("extra", 7) and torch.equal(got[0], after)
        assert torch.equal(hook(None, (), before.clone()), after)
        assert hook(None, (), (before[:, :3].clone(), "extra")) is None


def test_a_pre_hook_given_hidden_states_by_keyword(session, enc) -> None:  # noqa: ANN001
    """A block called with `hidden_states=` (some families) or with more positional arguments: the
    same edit, the other arguments kept."""
    prog = 'let word = concept "word"\nsteer prompt at layer 1 { set word = 3 }'
    seen: list[torch.Tensor] = []
    block = session.adapter.decoder_layers()[1]
    with session.steer(prog) as st, torch.no_grad():
        h = block.register_forward_pre_hook(lambda _m, args, kw: seen.append((args[0] if args else kw["hidden_states"]).clone()),
                                            with_kwargs=True)
        try:
            session.model(**enc)  # records the call's positions; `seen` holds the block's steered input
        finally:
            h.remove()
        hook = st._pre(1)
        before = seen[0].clone()
        first = hook(None, (before.clone(), "a", "b"), {"k": 1})
        assert first is not None and first[0][1:] == ("a", "b") and first[1] == {"k": 1}
        edited = first[0][0]
        args, kwargs = hook(None, (), {"hidden_states": before.clone(), "k": 1})
        assert args == () and kwargs["k"] == 1 and torch.equal(kwargs["hidden_states"], edited)


def test_a_trace_reads_the_concept_after_the_edit(exact_session, enc) -> None:  # noqa: ANN001
    """`set word = 3` on the prompt at layer 0 with `trace word`: the trace reads 3 on the prompt
    at layer 0 (after the edit), and h_30 + 2 elsewhere (word's code on the identity-like SAE)."""
    from runtime_support import EXACT_GROUPS

    head = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS)
    with exact_session.steer(head + "trace word\nsteer prompt at layer 0 { set word = 3 }") as st, torch.no_grad():
        exact_session.model(**enc)
    got = st.trace.max_activation("word", "prompt", 0)
    assert torch.allclose(got, torch.full_like(got, 3.0), atol=1e-5)
    with exact_session.steer(head + "trace word") as plain, torch.no_grad():
        exact_session.model(**enc)
    assert (plain.trace.max_activation("word", "prompt", 0) < 2.5).all()

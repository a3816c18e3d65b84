"""How the steerer meets the model's calls: ids given positionally, inputs without ids, a cache
from a generation begun outside it, traces on and off, two rule concepts read at another layer, a
layer where one modality's codes are recomputed without a change, and what it leaves on the
adapter. On the identity-like dictionary of runtime_support. Written with mutation testing
(benchmarks/MUTATION.md)."""

from __future__ import annotations

import pytest
import torch
from runtime_support import EXACT_GROUPS, encode, kinds, steered_input

from steerlang.errors import InputError
from steerlang.runtime.hooks import Steerer
from steerlang.runtime.session import load_image

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS) + "".join(f'let x{i} = concept "x{i}"\n' for i in (3, 5))


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def block_input(session, enc: dict, prog: str, layer: int, call) -> torch.Tensor:  # noqa: ANN001
    seen: list[torch.Tensor] = []
    block = session.adapter.decoder_layers()[layer]
    with session.steer(prog), torch.no_grad():
        h = block.register_forward_pre_hook(lambda _m, args, kw: seen.append((args[0] if args else kw["hidden_states"]).clone()),
                                            with_kwargs=True)
        try:
            call()
        finally:
            h.remove()
    return seen[0]


def test_ids_given_positionally_to_the_base_model(exact_session, enc) -> None:  # noqa: ANN001
    prog = HEAD + "steer prompt at layer 1 { add word * 3 }"
    base = exact_session.adapter.base_model()
    rest = {k: v for k, v in enc.items() if k != "input_ids"}
    by_kw = block_input(exact_session, enc, prog, 1, lambda: base(input_ids=enc["input_ids"], **rest))
    by_pos = block_input(exact_session, enc, prog, 1, lambda: base(enc["input_ids"], **rest))
    _, want = steered_input(exact_session, prog, enc, 1)
    assert torch.equal(by_pos, by_kw) and torch.equal(by_kw, want)


def test_inputs_without_ids_are_refused(exact_session, enc) -> None:  # noqa: ANN001
    embeds = exact_session.model.get_input_embeddings()(enc["input_ids"])
    with exact_session.steer(HEAD + "steer prompt at layer 1 { add word * 3 }"), torch.no_grad():
        with pytest.raises(InputError) as err:
            exact_session.adapter.base_model()(inputs_embeds=embeds, attention_mask=enc["attention_mask"])
    assert str(err.value) == "steering needs input_ids: positions cannot be located from inputs_embeds alone"


def test_a_generation_begun_outside_is_refused(exact_session, enc) -> None:  # noqa: ANN001
    with torch.no_grad():
        out = exact_session.model(**enc, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([enc["attention_mask"], torch.ones_like(nxt)], dim=1)
        with exact_session.steer(HEAD + "steer output at layer 1 { add word * 3 }"):
            with pytest.raises(InputError) as err:
                exact_session.model(input_ids=nxt, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
    assert str(err.value) == ("steering started in the middle of a generation (a non-empty KV cache): start a new "
                              "generate inside the steering context")


def test_traces_on_by_default_and_off_when_asked(exact_session, enc) -> None:  # noqa: ANN001
    plan = exact_session.plan(exact_session.compile(HEAD + "trace word"))
    for st, traced in ((Steerer(exact_session.adapter, plan), True), (Steerer(exact_session.adapter, plan, trace=False), False)):
        with st, torch.no_grad():
            exact_session.model(**enc)
        assert (st.trace.labels == ["word"]) is traced
    empty = exact_session.plan(exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }"))
    assert Steerer(exact_session.adapter, empty).trace_on is False


def test_two_rule_concepts_read_at_a_lower_layer(exact_session, enc) -> None:  # noqa: ANN001
    """x3 and x5 exist at layer 0 only and read about 2 (h + bias 2): a rule on both, editing at
    layer 1, reads both at layer 0; each alone too."""
    _, prompt = kinds(exact_session, enc)
    for rule in ("x3 > 1 in prompt and x5 > 1 in prompt", "x5 > 1 in prompt and x3 > 1 in prompt"):
        before, after = steered_input(exact_session, HEAD + f"when {rule} {{ steer prompt at layer 1 {{ add word * 3 }} }}",
                                      enc, 1)
        want = before.clone()
        want[..., 30] = torch.where(prompt, before[..., 30] + 3.0, before[..., 30])
        assert torch.allclose(after, want, atol=1e-5, rtol=0)


def test_an_unchanged_modality_before_a_changed_one(exact_session, enc) -> None:  # noqa: ANN001
    """`scale dog by 1` recomputes the image codes and changes nothing; the prompt edit after it at
    the same layer is still written."""
    _, alone = steered_input(exact_session, HEAD + "steer prompt at layer 0 { off x3 }", enc, 0)
    before, both = steered_input(exact_session, HEAD + "steer image at layer 0 { scale dog by 1 }\n"
                                 "steer prompt at layer 0 { off x3 }", enc, 0)
    assert not torch.equal(alone, before) and torch.equal(both, alone)


def test_the_prefills_inputs_are_not_kept_after_the_run(exact_session, enc) -> None:  # noqa: ANN001
    """Families that cache the last call's grids (`adapter._grids`) drop them when the run ends."""
    exact_session.adapter._grids = ("kwargs", "ids", [])
    with exact_session.steer(HEAD + "steer image at layer 0 { off cat }"), torch.no_grad():
        exact_session.model(**enc)
    assert exact_session.adapter._grids is None


def test_a_call_with_positions_past_its_length_and_no_cache() -> None:
    import transformers

    from steerlang.errors import SteerError
    from steerlang.runtime.hooks import cached_length

    assert cached_length((), {"position_ids": torch.tensor([[1, 2]])}, 2) == 0  # counted from 1 (PaliGemma)
    with pytest.raises(SteerError) as err:
        cached_length((), {"position_ids": torch.tensor([[5, 6]])}, 2)
    assert str(err.value) == (
        f"cannot tell a prefill from a decode step: transformers {transformers.__version__} called the model with "
        "position ids up to 6 for 2 new tokens but passed no cache this runtime recognises (no cache_position, no "
        "argument with get_seq_length); steering would edit the wrong positions. Install a transformers version "
        "steerlang supports (see the README) or report this.")

"""Decode steps are told from prefills by what a call carries, whatever transformers calls its cache.

transformers 5.24 renamed the base model's `past_key_values=` to `cache=`; a runtime that read only
the old name took every decode step for a new prefill and silently dropped every output edit.
"""

from __future__ import annotations

import pytest
import torch
from runtime_support import encode, gen_ids

from steerlang.errors import SteerError
from steerlang.runtime.hooks import cached_length
from steerlang.runtime.masks import OUTPUT
from steerlang.runtime.session import load_image

HEAD = 'let cat = concept "cat"\nlet dog = concept "dog"\nlet word = concept "word"\n'


class FakeCache:
    """Anything with `get_seq_length` is a cache, whatever keyword carries it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


@pytest.mark.parametrize("name", ["past_key_values", "cache", "kv_cache_of_a_future_release"])
def test_a_cache_is_found_under_any_keyword(name: str) -> None:
    assert cached_length((), {name: FakeCache(17), "position_ids": torch.tensor([[17]])}, 1) == 17
    assert cached_length((), {name: FakeCache(0), "position_ids": torch.arange(9)[None]}, 9) == 0


def test_a_positional_cache_is_found() -> None:
    assert cached_length((torch.zeros(1, 1, dtype=torch.long), FakeCache(5)), {}, 1) == 5


def test_cache_position_wins_over_the_cache_length() -> None:
    # e.g. a sliding-window cache that reports fewer positions than were seen
    assert cached_length((), {"cache": FakeCache(4), "cache_position": torch.tensor([30])}, 1) == 30


def test_a_plain_forward_is_a_prefill() -> None:
    assert cached_length((), {"input_ids": torch.zeros(2, 9, dtype=torch.long)}, 9) == 0
    # left padding: position ids never reach the call's length at a prefill
    pids = torch.tensor([[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    assert cached_length((), {"position_ids": pids}, 5) == 0


def test_a_decode_step_without_a_visible_cache_raises() -> None:
    with pytest.raises(SteerError, match="cannot tell a prefill from a decode step"):
        cached_length((), {"position_ids": torch.tensor([[88]]), "cache": object()}, 1)
    # the second token of a decode run (position 2, one token, no cache) is already past any prefill
    with pytest.raises(SteerError, match="cannot tell a prefill from a decode step"):
        cached_length((), {"position_ids": torch.tensor([[2]])}, 1)


def test_positions_counted_from_one_are_a_whole_sequence() -> None:
    # PaliGemma numbers positions 1..T: an uncached step over the whole sequence is a prefill
    assert cached_length((), {"position_ids": torch.arange(1, 24)[None]}, 23) == 0


@pytest.fixture(scope="module")
def enc(bundle, images):  # noqa: ANN001, ANN201
    return encode(bundle, [load_image(p) for p in images])


def test_generate_is_seen_as_one_prefill_then_decode_steps(session, bundle, enc) -> None:  # noqa: ANN001
    """With the installed transformers: n new tokens are 1 prefill + n-1 decode steps, and the last
    step holds output token n-2 at absolute position P + n - 2."""
    steps: list[int] = []
    n = 6
    with session.steer(HEAD + "trace word", on_forward=steps.append) as st:
        gen_ids(bundle, enc, n=n)
    assert steps == list(range(n))
    prompt_len = enc["input_ids"].shape[1]
    assert st.pos is not None and st.pos.start == prompt_len + n - 2
    assert bool((st.pos.kind == OUTPUT).all()) and st.pos.out_index.tolist() == [[n - 2]] * len(enc["input_ids"])
    # the trace covers the prompt and every generated position that was fed back
    assert st.trace is not None and st.trace.acts["word"][0].shape[1] == prompt_len + n - 1


def test_an_output_edit_changes_decode_steps(session, bundle, enc) -> None:  # noqa: ANN001
    """Output positions exist only at decode steps: misreading them makes this edit a no-op."""
    base = gen_ids(bundle, enc, n=8)
    with session.steer(HEAD + "steer output { add dog * 8 }"):
        steered = gen_ids(bundle, enc, n=8)
    assert torch.equal(steered[:, :1], base[:, :1])  # token 0 is predicted by the prefill, before any output position
    assert not torch.equal(steered, base)

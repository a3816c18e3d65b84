"""Checker edges: `generate` bounds, a repeated `generate`, model and dictionary names checked each
against its own, `trace` of a chain followed by concepts. Written with mutation testing
(benchmarks/MUTATION.md)."""

from __future__ import annotations

import pytest

from steerlang.lang import FakeConceptTable, LangError, compile_program


def errors(text: str, table=None) -> list[tuple[str, str | None]]:  # noqa: ANN001
    with pytest.raises(LangError) as info:
        compile_program(text, table or FakeConceptTable(), file="t.stl")
    return [(d.message, d.hint) for d in info.value.diagnostics]


@pytest.mark.parametrize("n", [1, 2, 4095, 4096])
def test_generate_accepts_1_to_4096(n: int) -> None:
    assert compile_program(f"generate {n} tokens", FakeConceptTable()).header.generate == n


@pytest.mark.parametrize("n", [0, 4097])
def test_generate_outside_1_to_4096(n: int) -> None:
    assert errors(f"generate {n} tokens") == [(f"cannot generate {n} tokens", "generate between 1 and 4096")]


def test_generate_given_twice() -> None:
    assert errors("generate 3 tokens\ngenerate 4 tokens") == [("`generate` is given twice", "first given at line 1")]


def test_model_and_dictionary_are_each_checked_against_their_own_name() -> None:
    table = FakeConceptTable(model="m1", dictionary="d1")
    prog = compile_program('model "m1"\ndictionary "d1"', table)
    assert (prog.header.model, prog.header.dictionary) == ("m1", "d1")
    assert errors('dictionary "m1"', table) == [('program is written for dictionary "m1", but the concept table is for '
                                                'dictionary "d1"', "check it with the dictionary it names")]


def test_trace_of_a_chain_then_concepts() -> None:
    """A chain name in `trace` is an error; the concepts after it are still checked (and a name used
    before its definition is reported as such)."""
    got = errors('let cat = concept "cat"\nchain c: cat -> cat\ntrace c, cat, dog\nlet dog = concept "dog"')
    assert got == [('"c" is a chain: chains are always traced', "trace takes concepts"),
                   ('"dog" is used before it is defined (line 4)', "move the definition above its first use")]

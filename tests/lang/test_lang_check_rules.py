"""The checker inside rules and scopes: a name used before its definition is reported as such
wherever it appears (a rule's comparisons under `not`, `and`, `or`, a `where` scope, the edits and
steer blocks of a rule), every bad edit of a rule is reported, and a scope's second qualifier is
reported once, not checked. Written with mutation testing (benchmarks/MUTATION.md)."""

from __future__ import annotations

import pytest

from steerlang.lang import FakeConceptTable, LangError, compile_program

LATE = "let late = concept \"dog\"\n"


def errors(text: str, table=None) -> list[tuple[int, str]]:  # noqa: ANN001
    with pytest.raises(LangError) as info:
        compile_program(text, table or FakeConceptTable(), file="t.stl")
    return [(d.span.line, d.message) for d in info.value.diagnostics]


def diagnostics(text: str, table=None) -> list[tuple[int, int, str, str | None]]:  # noqa: ANN001
    with pytest.raises(LangError) as info:
        compile_program(text, table or FakeConceptTable(), file="t.stl")
    return [(d.span.line, d.span.col, d.message, d.hint) for d in info.value.diagnostics]


def before(line: int) -> str:
    return f'"late" is used before it is defined (line {line})'


@pytest.mark.parametrize("rule", [
    "when late > 0.3 in image { off cat }",
    "when not late > 0.3 in image { off cat }",
    "when cat > 0.3 in image and late > 0.3 in prompt { off cat }",
    "when cat > 0.3 in image or not late > 0.3 in output { off cat }",
    "when cat > 0.3 in image { off late }",
    "when cat > 0.3 in image { steer prompt { add late * 2 } }",
    "when cat > 0.3 in image { steer image where late > 0.2 { off cat } }",
    "steer image where late > 0.2 { off cat }",
    "expect late > 0.3 in output",
    "chain c: cat -> late",
    "steer prompt { replace cat with late }",
])
def test_a_name_used_before_its_definition(rule: str) -> None:
    assert errors('let cat = concept "cat"\n' + rule + "\n" + LATE) == [(2, before(3))]


def test_every_bad_edit_of_a_rule_is_reported() -> None:
    got = errors('let cat = concept "cat"\nwhen cat > 0.3 in image {\n  off kat\n  off cat\n  add dgo * 2\n}')
    assert [(line, msg) for line, msg in got] == [(3, 'unknown name "kat"'), (5, 'unknown name "dgo"')]


def test_a_scope_checks_its_first_qualifier_only() -> None:
    """`region` then `where`: one error for the second qualifier; its unknown name is not checked."""
    got = errors('let cat = concept "cat"\nsteer image region [0:0.5, 0:1] where kat > 0.2 { off cat }')
    assert got == [(2, "a scope takes at most one of region, where, tokens")]


SOME_LAYERS = FakeConceptTable(layers_of={"bird": (2, 3)})
LETS = 'let cat = concept "cat"\nlet bird = concept "bird"\n'


def test_a_chain_link_at_a_layer_its_concept_lacks() -> None:
    assert diagnostics(LETS + "chain c: cat at layer 0 -> bird at layer 1", SOME_LAYERS) == [
        (3, 28, 'concept "bird" has no latent at layers 1', "it exists at layers 2, 3")]


def test_a_replacement_at_a_layer_it_lacks() -> None:
    """The replacement is checked at the steer block's layers like the target; an unknown one is
    reported once."""
    assert diagnostics(LETS + "steer prompt at layer 1 { replace cat with bird }", SOME_LAYERS) == [
        (3, 44, 'concept "bird" has no latent at layers 1', "it exists at layers 2, 3")]
    assert errors('steer prompt at layer 1 { replace concept "cat" with kat }') == [(1, 'unknown name "kat"')]
    assert compile_program('steer prompt at layer 2 { replace concept "cat" with concept "bird" }', SOME_LAYERS).steps


def test_a_chain_defined_twice() -> None:
    assert diagnostics('let cat = concept "cat"\nchain c: cat -> cat\nchain c: cat -> cat') == [
        (3, 7, '"c" is already defined', "first defined at line 2")]


def test_clamp_to_one_value_is_allowed() -> None:
    prog = compile_program('steer prompt { clamp concept "cat" to [0.5, 0.5] }', FakeConceptTable())
    [edit] = prog.steps[0].edits
    assert (edit.op, edit.low, edit.high) == ("clamp", 0.5, 0.5)
    assert errors('steer prompt { clamp concept "cat" to [0.6, 0.5] }')[0][0] == 1

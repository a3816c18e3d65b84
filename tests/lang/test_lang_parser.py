"""Parser: AST shapes, spans, reserved words, friendly syntax errors."""

from __future__ import annotations

import dataclasses

import pytest

from steerlang.lang import LangError, ast, parse
from steerlang.lang.parser import reserved_words


def _only(text: str) -> ast.Stmt:
    program = parse(text, "t.stl")
    assert len(program.statements) == 1
    return program.statements[0]


def test_ast_nodes_are_frozen_and_carry_spans() -> None:
    stmt = _only('let cat = concept "cat"')
    assert isinstance(stmt, ast.Let)
    assert stmt.span == ast.Span("t.stl", 1, 1, 1, 24)
    assert stmt.name_span == ast.Span("t.stl", 1, 5, 1, 8)
    assert stmt.expr == ast.ConceptLit("cat", ast.Span("t.stl", 1, 11, 1, 24))
    with pytest.raises(dataclasses.FrozenInstanceError):
        stmt.name = "dog"  # type: ignore[misc]


def test_concept_ids_and_compounds() -> None:
    stmt = _only("let m = 0.5*image#12 - text#7 + (joint#3 | x)")
    assert isinstance(stmt, ast.Let) and isinstance(stmt.expr, ast.Sum)
    terms = stmt.expr.terms
    assert [t.sign for t in terms] == [1, -1, 1]
    assert terms[0].weight is not None and terms[0].weight.value == 0.5
    assert terms[0].expr == ast.ConceptId("image", 12, terms[0].expr.span)
    assert isinstance(terms[2].expr, ast.Union)


def test_id_wins_over_keyword_and_comment() -> None:
    stmt = _only("trace image#12 # image#13 is a comment")
    assert isinstance(stmt, ast.Trace)
    assert stmt.targets[0] == ast.ConceptId("image", 12, stmt.targets[0].span)


def test_scope_with_qualifier_and_layers() -> None:
    stmt = _only("steer output tokens 2..4 at layers 1, 3 { add x * -2 }")
    assert isinstance(stmt, ast.Steer)
    assert stmt.scope.kind == "output"
    assert isinstance(stmt.scope.qualifiers[0], ast.Tokens)
    assert stmt.scope.layers is not None and stmt.scope.layers.form == "list"
    add = stmt.body[0]
    assert isinstance(add, ast.Add) and add.strength is not None and add.strength.value == -2


def test_conditions_flatten_and_keep_precedence() -> None:
    stmt = _only("when a > 1 in image or b > 1 in image or not c < 2 in output and d > 0 in prompt { off a }")
    assert isinstance(stmt, ast.When) and isinstance(stmt.cond, ast.Or)
    assert len(stmt.cond.items) == 3
    assert isinstance(stmt.cond.items[2], ast.And)
    assert isinstance(stmt.cond.items[2].items[0], ast.Not)


def test_strings_unescape() -> None:
    stmt = _only(r'ask "say \"hi\"\n\ttwice \\ please"')
    assert isinstance(stmt, ast.Header)
    assert stmt.value.value == 'say "hi"\n\ttwice \\ please'


def test_keywords_are_reserved_everywhere() -> None:
    assert {"image", "steer", "off", "all", "force", "tokens", "has"} <= reserved_words()
    for word in ("image", "output", "on", "all", "layer", "has"):
        with pytest.raises(LangError, match="reserved word"):
            parse(f'let {word} = concept "x"')
    # A keyword is a keyword only as a whole word.
    assert isinstance(_only("let imagery = image#3"), ast.Let)
    with pytest.raises(LangError, match='unexpected name "offcat"'):
        parse("steer image { offcat }")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steer image {", "unexpected end of file"),
        ("let x = ", "expected a concept"),
        ("let x = concept", 'expected a string'),
        ("steer image region [0:1 0:1] {}", 'expected ","'),
        ("steer sky {}", "unexpected name \"sky\""),
        ("let x = concept 'cat'", "unexpected character"),
        ("generate many tokens", "expected a number"),
        ("expect output contains \"x\"", '"has" or "lacks"'),
    ],
)
def test_syntax_errors_are_friendly(text: str, message: str) -> None:
    with pytest.raises(LangError) as info:
        parse(text, "bad.stl")
    rendered = info.value.render()
    assert message in rendered
    assert rendered.startswith("bad.stl:1:")
    assert "^" in rendered


@pytest.mark.parametrize(
    "text",
    [
        "let x = " + "(" * 3000 + "a" + ")" * 3000,
        "let x = " + "(a | " * 3000 + "a" + ")" * 3000,
        "when " + "not " * 3000 + "a > 1 in image { }",
    ],
    ids=["parens", "unions", "nots"],
)
def test_deep_nesting_never_escapes(text: str) -> None:
    from steerlang.lang import compile_program, format_program

    for run in (lambda: compile_program(text), lambda: format_program(text)):
        try:
            run()
        except LangError as exc:
            assert "internal error" not in exc.render()

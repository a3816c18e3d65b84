"""The IR: built by hand, validated, round-tripped through JSON."""

from __future__ import annotations

import pydantic
import pytest

from steerlang.lang import FakeConceptTable, compile_program, ir


def test_ir_built_from_python_without_the_language() -> None:
    prog = ir.Program(steps=[ir.Steer(scope=ir.Scope(kind="image"), edits=[ir.Edit(op="off", target="cat")])])
    assert prog.version == 1
    edit = prog.steps[0].edits[0]  # type: ignore[union-attr]
    assert edit.target.terms[0].ref.name == "cat"
    assert ir.Program.model_validate_json(prog.model_dump_json()) == prog


def test_ir_equals_the_compiled_program() -> None:
    by_hand = ir.Program(
        source="<string>",
        bindings={"cat": ir.Concept(terms=[ir.Term(ref=ir.ConceptRef(name="cat"))], label="cat")},
        steps=[ir.Steer(scope=ir.Scope(kind="image"), edits=[ir.Edit(op="off", target="cat")])],
    )
    assert compile_program('let cat = concept "cat"\nsteer image { off cat }') == by_hand


def test_ir_forbids_extra_fields_and_checks_shapes() -> None:
    with pytest.raises(pydantic.ValidationError):
        ir.Program(steps=[], colour="red")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        ir.Scope(kind="image_region")  # region missing
    with pytest.raises(pydantic.ValidationError):
        ir.Edit(op="set", target="cat")  # value missing
    with pytest.raises(pydantic.ValidationError):
        ir.Edit(op="clamp", target="cat", low=2, high=1)
    with pytest.raises(pydantic.ValidationError):
        ir.Region(row_start=0.5, row_end=0.2, col_start=0, col_end=1)
    with pytest.raises(pydantic.ValidationError):
        ir.Program.model_validate_json('{"version": 2}')
    assert ir.Edit(op="add", target="cat").value == 1.0


def test_conditions_round_trip() -> None:
    text = (
        'let c = concept "cat"\nlet d = concept "dog"\n'
        "when not (c > 1 in image or d < 2 in prompt) and c > 0 in output { off c }"
    )
    prog = compile_program(text, FakeConceptTable())
    rule = prog.steps[0]
    assert isinstance(rule, ir.When) and isinstance(rule.condition, ir.And)
    assert isinstance(rule.condition.items[0], ir.Not)
    assert ir.Program.model_validate_json(prog.model_dump_json()) == prog

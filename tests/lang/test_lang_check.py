"""Checker and lowering: resolution with and without a table, imports, collected errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlang.lang import FakeConceptTable, LangError, check, compile_program, ir, parse


def _compile(text: str, **kw: object) -> ir.Program:
    kw.setdefault("table", FakeConceptTable())
    return compile_program(text, kw.pop("table"), file="t.stl", **kw)  # type: ignore[arg-type]


def _errors(text: str, **kw: object) -> list[str]:
    with pytest.raises(LangError) as info:
        _compile(text, **kw)
    return [d.message for d in info.value.diagnostics]


def test_concepts_resolve_against_the_table() -> None:
    prog = _compile('let k = concept "kitty"\nlet p = k | image#5\nsteer image { off p }')
    ref = prog.bindings["k"].terms[0].ref
    assert (ref.name, ref.canonical, ref.space, ref.index, ref.key) == ("kitty", "cat", "joint", 0, "joint#0")
    target = prog.steps[0].edits[0].target  # type: ignore[union-attr]
    assert target.combine == "max" and [t.ref.key for t in target.terms] == ["joint#0", "image#5"]
    assert target.label == "p"


def test_weighted_sums_flatten_with_signs() -> None:
    prog = _compile('let c = concept "cat"\nlet d = concept "dog"\nlet m = 2*(0.5*c - d) - c')
    terms = prog.bindings["m"].terms
    assert [(t.ref.name, t.weight) for t in terms] == [("cat", 1.0), ("dog", -2.0), ("cat", -1.0)]
    assert prog.bindings["m"].combine == "sum"


def test_without_a_table_names_stay_unresolved() -> None:
    prog = _compile('let z = concept "zebra"\nsteer all at layer 40 { off z off image#99999 }', table=None)
    edits = prog.steps[0].edits  # type: ignore[union-attr]
    assert edits[0].target.terms[0].ref == ir.ConceptRef(name="zebra")
    assert edits[1].target.terms[0].ref == ir.ConceptRef(name="image#99999", space="image", index=99999)
    assert prog.steps[0].scope.layers == [40]  # type: ignore[union-attr]


def test_layers_expand_and_scopes_lower() -> None:
    prog = _compile(
        'let c = concept "cat"\n'
        "steer image region [0:0.5, 0.5:1] at layers 1..3 { off c }\n"
        "steer output tokens 2..4 { on c }\n"
        "steer image where c > 0.3 { off c }\n"
    )
    s0, s1, s2 = prog.steps
    assert s0.scope.kind == "image_region" and s0.scope.layers == [1, 2, 3]  # type: ignore[union-attr]
    assert s0.scope.region == ir.Region(row_start=0, row_end=0.5, col_start=0.5, col_end=1)  # type: ignore[union-attr]
    assert s1.scope.tokens == ir.TokenRange(start=2, end=4)  # type: ignore[union-attr]
    assert s2.scope.where is not None and s2.scope.where.threshold == 0.3  # type: ignore[union-attr]


def test_bare_edits_in_a_rule_become_steer_all_groups() -> None:
    prog = _compile('let c = concept "cat"\nwhen c > 1 in image { off c on c steer prompt { on c } scale c by 2 }')
    rule = prog.steps[0]
    assert isinstance(rule, ir.When)
    assert [s.scope.kind for s in rule.steps] == ["all", "prompt", "all"]
    assert [len(s.edits) for s in rule.steps] == [2, 1, 1]


def test_all_semantic_errors_are_reported_together() -> None:
    messages = _errors(
        'let a = concept "kat"\nsteer all at layer 9 { clamp b to [2, 1] }\ngenerate 0 tokens\nexpect output has ""'
    )
    assert len(messages) == 6
    assert messages[0] == 'unknown concept "kat"'


def test_did_you_mean_for_names_and_concepts() -> None:
    with pytest.raises(LangError) as info:
        _compile('let cat = concept "cta"\nsteer all { off cot }')
    hints = [d.hint for d in info.value.diagnostics]
    assert hints[0] is not None and hints[0].startswith('did you mean "cat"')
    assert hints[1] is not None and "cat" in hints[1]


def test_imports_resolve_relative_and_detect_cycles(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.stl").write_text('import "b.stl"\nlet a = concept "cat"\n')
    (tmp_path / "lib" / "b.stl").write_text('let b = concept "dog"\n')
    main = tmp_path / "main.stl"
    main.write_text('import "lib/a.stl"\nsteer all { replace a with b }\n')
    prog = compile_program(main, FakeConceptTable())
    assert set(prog.bindings) == {"a", "b"}
    assert [Path(p).name for p in prog.imports] == ["a.stl", "b.stl"]

    (tmp_path / "lib" / "b.stl").write_text('import "a.stl"\nlet b = concept "dog"\n')
    with pytest.raises(LangError) as info:
        compile_program(main, FakeConceptTable())
    message = info.value.diagnostics[0].message
    assert message.startswith("import cycle: ") and message.count("->") == 2


def test_imports_through_a_custom_loader() -> None:
    files = {"defs.stl": 'let cat = concept "cat"\n'}
    prog = compile_program('import "defs.stl"\nsteer all { off cat }', FakeConceptTable(), loader=files.__getitem__)
    assert "cat" in prog.bindings
    with pytest.raises(LangError, match="cannot read imported file"):
        compile_program('import "nope.stl"', FakeConceptTable(), loader=lambda p: open(p).read())


def test_check_takes_a_parsed_program() -> None:
    program = parse('let cat = concept "cat"', "x.stl")
    assert check(program).source == "x.stl"


def test_compile_program_reads_paths_and_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(LangError, match="cannot read program"):
        compile_program(tmp_path / "missing.stl")

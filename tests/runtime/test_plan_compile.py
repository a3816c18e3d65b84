"""IR -> hook plan, without running the model: how concepts resolve (and refuse a program checked
against another dictionary), the layers each edit gets, the latents each hook computes, the labels
traces use, and the plan's error messages word for word. On the identity-like concept set of
runtime_support (layers 0 and 1 of a model with layers 0 to 2, hidden size 32, 64 latents). Written
with mutation testing (benchmarks/MUTATION.md)."""

from __future__ import annotations

import dataclasses

import pytest
from runtime_support import EXACT_GROUPS

from steerlang.dictionary.concepts import Concept, LatentGroup
from steerlang.errors import DictionaryError, InputError
from steerlang.lang import compile_program, ir
from steerlang.runtime.plan import compile_plan

HEAD = "".join(f'let {n} = concept "{n}"\n' for n in EXACT_GROUPS) + 'let x3 = concept "x3"\nlet x5 = concept "x5"\n'


def plan(cs, prog: ir.Program, **kw):  # noqa: ANN001, ANN201
    return compile_plan(prog, cs, n_layers=2, hidden_size=32, **kw)


def with_ref(prog: ir.Program, **update) -> ir.Program:  # noqa: ANN003
    """`prog` with the first edit's target reference changed (IR a checker would not write)."""
    step = prog.steps[0]
    edit = step.edits[0]
    term = edit.target.terms[0]
    term = term.model_copy(update={"ref": term.ref.model_copy(update=update)})
    edit = edit.model_copy(update={"target": edit.target.model_copy(update={"terms": [term]})})
    return prog.model_copy(update={"steps": [step.model_copy(update={"edits": [edit]})]})


# -- resolving concepts -------------------------------------------------------------------------


def test_a_checked_concept_resolves_by_its_key(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }")
    [e] = plan(exact_concepts, prog).edits
    [(dc, w)] = e.target.terms
    assert (dc.name, dc.key, w) == ("dog", "joint#1", 1.0)


def test_hand_written_ir_resolves_by_name(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = with_ref(exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }"), space=None, index=None,
                    canonical=None)
    [(dc, _w)] = plan(exact_concepts, prog).edits[0].target.terms
    assert dc.key == "joint#1"
    prog = with_ref(prog, name="woof", canonical="dog")  # the table's own name wins over the name as written
    [(dc, _w)] = plan(exact_concepts, prog).edits[0].target.terms
    assert dc.key == "joint#1"


def test_a_program_checked_against_another_dictionary_is_refused(exact_session, exact_concepts) -> None:  # noqa: ANN001
    """The key names another concept in this dictionary (a rebuilt one whose ids moved): refused,
    saying both names, instead of editing whatever latent now has that id."""
    prog = exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }").model_copy(update={"source": "p.stl"})
    moved = with_ref(prog, index=0)  # joint#0 is "cat" here
    with pytest.raises(InputError) as err:
        plan(exact_concepts, moved)
    assert str(err.value) == ("p.stl: concept 'dog' was checked as joint#0 ('dog'), which dictionary 'exactdict' calls "
                              "'cat': check the program again against this dictionary")
    for gone in (with_ref(prog, index=99), with_ref(prog, space=None, index=None, canonical=None, name="woof")):
        with pytest.raises(InputError) as err:
            plan(exact_concepts, gone)
        name = gone.steps[0].edits[0].target.terms[0].ref.name
        assert str(err.value) == (f"p.stl: unknown concept {name!r} in dictionary 'exactdict' (was the program compiled "
                                  "against another dictionary?)")


def test_an_unused_binding_must_resolve_too(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD)
    ref = prog.bindings["dog"].terms[0].ref
    bad = prog.bindings["dog"].model_copy(update={"terms": [prog.bindings["dog"].terms[0].model_copy(
        update={"ref": ref.model_copy(update={"index": 99})})]})
    with pytest.raises(InputError, match="unknown concept 'dog'"):
        plan(exact_concepts, prog.model_copy(update={"bindings": {**prog.bindings, "dog": bad}}))


# -- layers, rules and what each hook computes --------------------------------------------------------


def test_a_replacement_adds_its_layers(exact_session, exact_concepts) -> None:  # noqa: ANN001
    """x3 exists at layer 0 only, cat at 0 and 1: `replace x3 with cat` edits at both layers."""
    [e] = plan(exact_concepts, exact_session.compile(HEAD + "steer prompt { replace x3 with cat }")).edits
    assert e.layers == (0, 1)
    [e] = plan(exact_concepts, exact_session.compile(HEAD + "steer prompt { off x3 }")).edits
    assert e.layers == (0,)


def test_every_edit_of_a_program_is_kept_in_order(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }\n"
                                 "when cat > 0.3 in image {\n  steer prompt at layer 0 { off word }\n"
                                 "  steer output at layer 1 { scale star by 2 }\n}")
    edits = plan(exact_concepts, prog).edits
    assert [(e.op, e.target.label, e.layers, e.condition is None) for e in edits] == [
        ("off", "dog", (0,), True), ("off", "word", (0,), False), ("scale", "star", (1,), False)]
    cond = edits[1].condition
    assert edits[2].condition is cond and (cond.concept.label, cond.modality) == ("cat", "image")


def test_a_where_scope_reads_the_image(exact_session, exact_concepts) -> None:  # noqa: ANN001
    [e] = plan(exact_concepts, exact_session.compile(HEAD + "steer image where cat > 0.3 at layer 0 { off dog }")).edits
    assert (e.where.concept.label, e.where.op, e.where.threshold, e.where.modality) == ("cat", ">", 0.3, "image")


def test_a_forced_link_reads_the_previous_link_where_it_edits(exact_session, exact_concepts) -> None:  # noqa: ANN001
    """`cat at layer 1 -> x5 at layer 0`: x5's `on` at layer 0 is gated by cat read at layer 0, so
    layer 0 computes cat's latents (3, 5) although no edit of cat is there (no traces: trace=False)."""
    prog = exact_session.compile(HEAD + "force chain c: cat at layer 1 -> x5 at layer 0")
    p = plan(exact_concepts, prog, trace=False)
    assert [(e.op, e.target.label, e.layers, e.active_of.label) for e in p.edits] == [
        ("on", "cat", (1,), "cat"), ("on", "x5", (0,), "cat")]
    assert p.latents[(0, "text")].tolist() == [3, 5] and p.latents[(0, "image")].tolist() == [3, 5]
    assert p.latents[(1, "text")].tolist() == [3, 5] and p.traced == [] and p.layers == [0, 1]


def test_defaults_are_the_sparse_path_with_traces(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "trace word\nexpect star > 0.3 in output")
    p = plan(exact_concepts, prog)
    assert p.dense is False and [c.label for c in p.traced] == ["word", "star"]
    assert plan(exact_concepts, prog, trace=False).traced == []


def test_trace_labels_spell_the_expression(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "expect (cat | dog) > 0.3 in output\nexpect (0.5*cat + 2*dog) > 0.3 in output\n"
                                 "expect (cat + word) > 0.3 in output")
    assert [c.label for c in plan(exact_concepts, prog).traced] == ["cat | dog", "0.5*cat + 2*dog", "cat + word"]


# -- the plan's own errors, word for word ---------------------------------------------------------


def test_an_edit_at_a_layer_without_a_dictionary(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "steer prompt at layer 1 { off dog }")
    step = prog.steps[0]
    prog = prog.model_copy(update={"source": "p.stl", "steps": [step.model_copy(
        update={"scope": step.scope.model_copy(update={"layers": [2]})})]})
    with pytest.raises(DictionaryError) as err:
        plan(exact_concepts, prog)
    assert str(err.value) == "p.stl: no dictionary at layer 2; layers with a dictionary: 0, 1"


def test_a_dictionary_of_another_width(exact_session, exact_concepts) -> None:  # noqa: ANN001
    prog = exact_session.compile(HEAD + "steer prompt at layer 0 { off dog }")
    with pytest.raises(DictionaryError) as err:
        compile_plan(prog, exact_concepts, n_layers=2, hidden_size=16)
    assert str(err.value) == ("the image dictionary at layer 0 has d_in 32 but the model's hidden size is 16: the "
                              "dictionary 'exactdict' was trained on another model")


@pytest.mark.parametrize("latent", [64, 70])
def test_a_latent_past_the_dictionary(exact_session, exact_concepts, latent: int) -> None:  # noqa: ANN001
    """A concept whose group names latent 64 or more of a 64-latent SAE (latent 63 is fine)."""
    odd = Concept("text", 900, "odd", (), (LatentGroup(0, "text", (63, latent), (1.0, 1.0)),))
    ok = Concept("text", 901, "fine", (), (LatentGroup(0, "text", (62, 63), (1.0, 1.0)),))
    cs = dataclasses.replace(exact_concepts, concepts=[*exact_concepts.concepts, odd, ok])
    prog = compile_program('steer prompt at layer 0 { off concept "fine" }', cs)
    assert plan(cs, prog).latents[(0, "text")].tolist() == [62, 63]
    with pytest.raises(DictionaryError) as err:
        plan(cs, compile_program('steer prompt at layer 0 { off concept "odd" }', cs))
    assert str(err.value) == (f"{exact_concepts.root}: latent {latent} is out of range for the text dictionary at layer 0 "
                              "(64 latents)")


# -- hand-written IR: what the checker always fills in -------------------------------------------------


def test_hand_written_ir_without_labels_or_a_rule_modality(exact_session, exact_concepts) -> None:  # noqa: ANN001
    """Labels spell the expression when the IR has none; a rule that does not say where to read its
    concept reads the image."""
    prog = exact_session.compile(HEAD + "expect (cat | dog) > 0.3 in output\nexpect (0.5*cat + 2*dog) > 0.3 in output\n"
                                 "expect (cat + word) > 0.3 in output\n"
                                 "when cat > 0.3 in prompt { steer prompt at layer 0 { off dog } }")
    bare = [x.model_copy(update={"condition": x.condition.model_copy(update={
        "concept": x.condition.concept.model_copy(update={"label": None})})}) for x in prog.expectations]
    rule = prog.steps[0]
    rule = rule.model_copy(update={"condition": rule.condition.model_copy(update={"modality": None})})
    p = plan(exact_concepts, prog.model_copy(update={"expectations": bare, "steps": [rule]}))
    assert [c.label for c in p.traced] == ["cat | dog", "0.5*cat + 2*dog", "cat + word"]
    assert p.edits[0].condition.modality == "image"


def test_a_rule_on_a_concept_without_latents_wants_none(exact_session, exact_concepts) -> None:  # noqa: ANN001
    """A concept with no latent group anywhere: a rule on it has nothing to read (no latents, no
    extra layer), instead of failing to pick a layer."""
    empty = Concept("text", 902, "empty", (), ())
    cs = dataclasses.replace(exact_concepts, concepts=[*exact_concepts.concepts, empty])
    prog = compile_program('when concept "empty" > 0.3 in prompt { steer prompt at layer 1 { off concept "word" } }', cs)
    p = plan(cs, prog, trace=False)
    assert p.layers == [1] and {k: v.tolist() for k, v in p.latents.items()} == {(1, "image"): [30], (1, "text"): [30]}

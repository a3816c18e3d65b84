"""A one-line human summary of what a checked program does (the first line `steer run` prints).

    describe_program(prog)
    -> 'off cat in image where cat > 0.15 at layers 0..4'

Edits read as they are written, with their scope and the layers they apply at: the scope's layers,
else the layers the concepts exist at (as the table resolved them; "every layer" when unknown).
Chains, traces and expectations are mentioned only when nothing is edited.
"""

from __future__ import annotations

from collections.abc import Sequence

from steerlang.lang import ir

__all__ = ["describe_program", "layer_list"]


def describe_program(program: ir.Program) -> str:
    """What the program does, in one line: its edits, rules and chains (or what it only observes)."""
    parts = [_step(s) for s in program.steps]
    parts += [_chain(c) for c in program.chains]
    if not program.steps and not any(c.force for c in program.chains):
        observed = [f"trace {', '.join(_label(c) for c in program.traces)}"] if program.traces else []
        if program.expectations:
            n = len(program.expectations)
            observed.append(f"{n} expectation{'s' if n != 1 else ''}")
        parts.append("no edits" + (f" ({'; '.join(observed)})" if observed else ""))
    return "; ".join(parts)


def layer_list(layers: Sequence[int]) -> str:
    """`layer 2`, `layers 0..4` (a run of three or more), `layers 0, 1`, `layers 0, 2, 4`."""
    values = sorted(set(layers))
    if len(values) == 1:
        return f"layer {values[0]}"
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"layers {values[0]}..{values[-1]}"
    return "layers " + ", ".join(map(str, values))


# ---- pieces ------------------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:g}"


def _label(c: ir.Concept) -> str:
    if c.label:
        return c.label
    sep = " | " if c.combine == "max" else " + "
    return sep.join(t.ref.name if t.weight == 1 else f"{_num(t.weight)}*{t.ref.name}" for t in c.terms)


def _compare(c: ir.Compare) -> str:
    return f"{_label(c.concept)} {c.op} {_num(c.threshold)}" + (f" in {c.modality}" if c.modality else "")


def _cond(c: ir.Condition) -> str:
    if isinstance(c, ir.Compare):
        return _compare(c)
    if isinstance(c, ir.Not):
        inner = _cond(c.item)
        return f"not ({inner})" if isinstance(c.item, ir.And | ir.Or) else f"not {inner}"
    word = " and " if isinstance(c, ir.And) else " or "
    return word.join(f"({_cond(i)})" if isinstance(i, ir.And | ir.Or) else _cond(i) for i in c.items)


def _edit(e: ir.Edit) -> str:
    t = _label(e.target)
    match e.op:
        case "set":
            return f"set {t} = {_num(e.value or 0.0)}"
        case "scale":
            return f"scale {t} by {_num(e.value or 0.0)}"
        case "clamp":
            return f"clamp {t} to [{_num(e.low or 0.0)}, {_num(e.high or 0.0)}]"
        case "add":
            return f"add {t}" + ("" if e.value in (None, 1.0) else f" * {_num(e.value or 0.0)}")
        case "replace":
            assert e.replacement is not None
            return f"replace {t} with {_label(e.replacement)}"
    return f"{e.op} {t}"


def _scope(s: ir.Scope) -> str:
    match s.kind:
        case "all":
            return "everywhere"
        case "image_region":
            r = s.region
            assert r is not None
            return (f"in image region [{_num(r.row_start)}:{_num(r.row_end)}, "
                    f"{_num(r.col_start)}:{_num(r.col_end)}]")
        case "image_where":
            assert s.where is not None
            return f"in image where {_compare(s.where)}"
        case "output_tokens":
            assert s.tokens is not None
            return f"in output tokens {s.tokens.start}..{s.tokens.end}"
    return f"in {s.kind}"


def _concept_layers(concepts: Sequence[ir.Concept]) -> list[int] | None:
    """The layers the concepts exist at (None: unknown, i.e. every layer of the dictionary)."""
    out: set[int] = set()
    for c in concepts:
        for t in c.terms:
            if t.ref.layers is None:
                return None
            out.update(t.ref.layers)
    return sorted(out)


def _at(layers: list[int] | None) -> str:
    return "at every layer" if not layers else f"at {layer_list(layers)}"


def _steer(s: ir.Steer) -> str:
    scope = _scope(s.scope)
    if s.scope.layers is not None:
        edits = ", ".join(_edit(e) for e in s.edits)
        return f"{edits} {scope} {_at(s.scope.layers)}"
    # Each edit applies where its own concepts exist: group edits that share those layers.
    groups: list[tuple[list[int] | None, list[str]]] = []
    for e in s.edits:
        layers = _concept_layers([e.target] + ([e.replacement] if e.replacement is not None else []))
        if groups and groups[-1][0] == layers:
            groups[-1][1].append(_edit(e))
        else:
            groups.append((layers, [_edit(e)]))
    edits = ", ".join(f"{', '.join(texts)} {_at(layers)}" if len(groups) > 1 else ", ".join(texts)
                      for layers, texts in groups)
    if len(groups) == 1:
        return f"{edits} {scope} {_at(groups[0][0])}"
    return f"{edits} {scope}" if groups else f"nothing {scope}"


def _step(s: ir.Step) -> str:
    if isinstance(s, ir.When):
        return f"when {_cond(s.condition)}: " + ", ".join(_steer(x) for x in s.steps)
    return _steer(s)


def _chain(c: ir.Chain) -> str:
    links = " -> ".join(_label(link.concept) + ("" if link.layers is None else f" at {layer_list(link.layers)}")
                        for link in c.links)
    return f"{'force ' if c.force else ''}chain {c.name}: {links}"

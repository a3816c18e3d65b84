"""Values of a program: concept expressions resolved against the table, numbers, layers, ranges.

`Resolver` is the part of the checker that turns what a program *names* into IR values; it
reports problems through `error` and returns None for anything it could not resolve, so the
checker can go on and collect every error.
"""

from __future__ import annotations

from dataclasses import dataclass

from steerlang.lang import ast, ir
from steerlang.lang.concepts import ConceptTable
from steerlang.lang.errors import Diagnostic, did_you_mean
from steerlang.lang.fmt import format_expr

Env = dict[str, "Binding"]
"""Names visible in a file: `let` and `chain` definitions, its imports' included."""

__all__ = ["Binding", "Env", "Resolver", "as_int", "same_concept"]


@dataclass
class Binding:
    """What a name stands for: a concept (`let`), or a chain (concept None)."""

    kind: str  # "let" or "chain"
    span: ast.Span
    concept: ir.Concept | None  # None: a chain, or a let whose expression had errors


class Resolver:
    """Resolves concept expressions, numbers, layers and ranges; collects diagnostics."""

    def __init__(self, table: ConceptTable | None) -> None:
        self.table = table
        self.diags: list[Diagnostic] = []
        self.table_names: list[str] | None = None

    def error(self, span: ast.Span, message: str, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(span, message, hint))

    # ---- concept expressions -----------------------------------------------------------------

    def _expr(self, e: ast.Expr, env: Env, later: dict[str, ast.Span],
              defining: str | None = None) -> ir.Concept | None:
        """Resolve a concept expression; None (after reporting) if it has errors."""
        if isinstance(e, ast.Ref):
            return self._ref(e, env, later, defining)
        if isinstance(e, ast.ConceptLit | ast.ConceptId):
            ref = self._concept(e)
            return None if ref is None else ir.Concept(terms=[ir.Term(ref=ref)], label=ref.name)
        if isinstance(e, ast.Union):
            refs: list[ir.ConceptRef] = []
            ok = True
            for item in e.items:
                c = self._expr(item, env, later, defining)
                if c is None:
                    ok = False
                elif c.combine == "sum" and (len(c.terms) > 1 or c.terms[0].weight != 1.0):
                    self.error(item.span, "a weighted sum cannot be part of a union (|)",
                               "a union takes plain concepts; weight the union's members instead")
                    ok = False
                else:
                    refs.extend(t.ref for t in c.terms if t.ref not in refs)
            if not ok:
                return None
            return ir.Concept(terms=[ir.Term(ref=r) for r in refs], combine="max" if len(refs) > 1 else "sum",
                              label=format_expr(e))
        terms: list[ir.Term] = []
        ok = True
        for term in e.terms:
            c = self._expr(term.expr, env, later, defining)
            if c is None:
                ok = False
                continue
            if c.combine == "max":
                self.error(term.expr.span, "a union (|) cannot be weighted or summed",
                           "write the members as a weighted sum: 0.5*a + 0.5*b")
                ok = False
                continue
            weight = term.sign * (term.weight.value if term.weight is not None else 1.0)
            terms.extend(ir.Term(ref=t.ref, weight=weight * t.weight) for t in c.terms)
        if not ok:
            return None
        return ir.Concept(terms=terms, combine="sum", label=format_expr(e))

    def _ref(self, e: ast.Ref, env: Env, later: dict[str, ast.Span],
             defining: str | None) -> ir.Concept | None:
        binding = env.get(e.name)
        if binding is not None and binding.kind == "let":
            if binding.concept is None:
                return None  # its definition was already reported
            return binding.concept.model_copy(update={"label": e.name})
        if binding is not None:
            self.error(e.span, f'"{e.name}" is a chain, not a concept', "use one of its links")
        elif e.name == defining:
            self.error(e.span, f'"{e.name}" is defined in terms of itself')
        elif e.name in later:
            self.error(e.span, f'"{e.name}" is used before it is defined (line {later[e.name].line})',
                       "move the definition above its first use")
        else:
            lets = [n for n, b in env.items() if b.kind == "let"]
            hint = did_you_mean(e.name, lets)
            if hint is None:
                if self.table is not None and self.table.lookup(e.name) is not None:
                    hint = f'the dictionary has it: write concept "{e.name}", or let {e.name} = concept "{e.name}"'
                else:
                    hint = f'define it first: let {e.name} = concept "{e.name}"'
            self.error(e.span, f'unknown name "{e.name}"', hint)
        return None

    def _concept(self, e: ast.ConceptLit | ast.ConceptId) -> ir.ConceptRef | None:
        table = self.table
        if isinstance(e, ast.ConceptId):
            name = f"{e.space}#{e.index}"
            if table is None:
                return ir.ConceptRef(name=name, space=e.space, index=e.index)
            info = table.lookup_id(e.space, e.index)
            if info is None:
                hint = getattr(table, "id_hint", None)  # raw SAEs say which latents exist
                self.error(e.span, f"no concept {name} in {_table_name(table)}", hint(e.space, e.index) if hint else None)
                return None
        else:
            name = e.name
            if not name.strip():
                self.error(e.span, "empty concept name")
                return None
            if table is None:
                return ir.ConceptRef(name=name)
            info = table.lookup(name)
            if info is None:
                if self.table_names is None:
                    self.table_names = list(table.names())
                hint = did_you_mean(name, self.table_names)
                if getattr(table, "is_raw", False):
                    hint = "this dictionary has no named concepts (raw SAEs): address latents by id, e.g. image#12 or text#3"
                self.error(e.span, f'unknown concept "{name}"', hint)
                return None
        return ir.ConceptRef(name=name, space=info.space, index=info.index, canonical=info.name,
                             layers=sorted(info.layers) if info.layers else None)

    def _concept_at(self, concept: ir.Concept, layers: list[int] | None, span: ast.Span) -> None:
        # A concept narrowed to layers where it has no latent would silently do nothing.
        if layers is None:
            return
        for term in concept.terms:
            have = term.ref.layers
            if have is not None and not set(have) & set(layers):
                self.error(span, f'concept "{term.ref.name}" has no latent at layers {_list(layers)}',
                           f"it exists at layers {_list(have)}")

    # ---- numbers, layers, scopes --------------------------------------------------------------

    def _whole(self, num: ast.Num, what: str) -> int | None:
        n = as_int(num)
        if n is None:
            self.error(num.span, f"{what} must be a whole number, not {num.text}")
        elif n < 0:
            self.error(num.span, f"{what} must not be negative")
            return None
        return n

    def _layers(self, spec: ast.Layers | None) -> list[int] | None:
        if spec is None:
            return None
        values = [self._whole(n, "a layer") for n in spec.numbers]
        if any(v is None for v in values):
            return None
        ints = [v for v in values if v is not None]
        if spec.form == "range":
            if ints[0] > ints[1]:
                self.error(spec.span, f"empty layer range {ints[0]}..{ints[1]}", "write the lower layer first")
                return None
            ints = list(range(ints[0], ints[1] + 1))
        elif len(set(ints)) != len(ints):
            self.error(spec.span, "a layer is listed twice")
        if self.table is not None and self.table.layers():
            have = self.table.layers()
            missing = [n for n in ints if n not in have]
            if missing:
                self.error(spec.span, f"no dictionary at layer{'s' if len(missing) > 1 else ''} {_list(missing)}",
                           f"layers with a dictionary: {_list(have)}")
                return None
        return sorted(set(ints))

    # ---- ranges ------------------------------------------------------------------------------

    def _region(self, q: ast.Region) -> ir.Region | None:
        nums = (q.row_start, q.row_end, q.col_start, q.col_end)
        ok = True
        for n in nums:
            if not 0 <= n.value <= 1:
                self.error(n.span, f"region bound {n.text} is outside [0, 1]",
                           "regions are fractions of the patch grid: [r0:r1, c0:c1] with 0 <= r0 < r1 <= 1")
                ok = False
        if ok:
            for lo, hi, what in ((q.row_start, q.row_end, "rows"), (q.col_start, q.col_end, "columns")):
                if lo.value >= hi.value:
                    self.error(lo.span, f"empty region: {what} {lo.text}:{hi.text}", "the start must be below the end")
                    ok = False
        if not ok:
            return None
        return ir.Region(row_start=nums[0].value, row_end=nums[1].value, col_start=nums[2].value,
                         col_end=nums[3].value)

    def _tokens(self, q: ast.Tokens) -> ir.TokenRange | None:
        start, end = self._whole(q.start, "a token position"), self._whole(q.end, "a token position")
        if start is None or end is None:
            return None
        if start > end:
            self.error(q.span, f"empty token range {start}..{end}", "write the first token first")
            return None
        return ir.TokenRange(start=start, end=end)


# ---- helpers -----------------------------------------------------------------------------------


def as_int(num: ast.Num) -> int | None:
    """The number as an int if it was written as one (`3`, `-1`; not `3.0` or `1e2`), else None."""
    text = num.text.lstrip("-")
    if not text.isdigit():
        return None
    return int(num.text)


def same_concept(a: ir.Concept, b: ir.Concept) -> bool:
    """Whether two resolved concepts are the same (for `replace F with F`)."""
    # Compare what the table resolved (an alias is the same concept), or names when unresolved.
    def key(c: ir.Concept) -> tuple[str, list[tuple[str, float]]]:
        return c.combine, sorted((t.ref.key or t.ref.name, t.weight) for t in c.terms)

    return key(a) == key(b)


def _list(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


def _table_name(table: ConceptTable) -> str:
    name = table.dictionary_name
    return f'dictionary "{name}"' if name else "the concept table"

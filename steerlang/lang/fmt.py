"""Canonical formatting of .stl programs (`steer fmt`): one statement per line, 4-space blocks.

Comments are kept: a comment on its own line stays before the statement that followed it (at
that statement's indentation), and a comment at the end of a line stays at the end of the
formatted line for the same statement, two spaces after it. Runs of blank lines become one.
Formatting is idempotent: `format_program(format_program(x)) == format_program(x)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steerlang.lang import ast
from steerlang.lang.parser import comments, parse

__all__ = ["format_program", "format_expr", "format_stmt"]

_INDENT = "    "


def format_program(text: str, file: str = "<string>") -> str:
    """The canonical text of a program; raises `LangError` on a syntax error."""
    program = parse(text, file)
    entries: list[_Entry] = []
    for stmt in program.statements:
        _emit(stmt, 0, entries)
    _attach_comments(entries, text)
    return _render(entries)


# ---- expressions -------------------------------------------------------------------------------


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _primary(e: ast.Expr) -> str:
    if isinstance(e, ast.Ref):
        return e.name
    if isinstance(e, ast.ConceptLit):
        return f"concept {_string(e.name)}"
    if isinstance(e, ast.ConceptId):
        return f"{e.space}#{e.index}"
    return f"({format_expr(e)})"


def format_expr(e: ast.Expr) -> str:
    """A concept expression as it is written canonically (`0.5*cat + 0.5*dog`, `cat | dog`)."""
    if isinstance(e, ast.Union):
        return " | ".join(_primary(i) for i in e.items)
    if isinstance(e, ast.Sum):
        parts: list[str] = []
        for i, term in enumerate(e.terms):
            body = _primary(term.expr) if term.weight is None else f"{term.weight.text}*{_primary(term.expr)}"
            if i == 0:
                parts.append(body if term.sign == 1 else f"-1*{body}")
            else:
                parts.append(("+ " if term.sign == 1 else "- ") + body)
        return " ".join(parts)
    return _primary(e)


def _layers(layers: ast.Layers | None) -> str:
    if layers is None:
        return ""
    nums = [n.text for n in layers.numbers]
    if layers.form == "one":
        return f" at layer {nums[0]}"
    if layers.form == "range":
        return f" at layers {nums[0]}..{nums[1]}"
    return " at layers " + ", ".join(nums)


def _compare(c: ast.Compare) -> str:
    text = f"{_primary(c.target)} {c.op} {c.threshold.text}"
    return text + (f" in {c.modality}" if c.modality else "")


def _cond(c: ast.Cond) -> str:
    if isinstance(c, ast.Compare):
        return _compare(c)
    if isinstance(c, ast.Or):
        return " or ".join(_cond(i) for i in c.items)
    if isinstance(c, ast.And):
        return " and ".join(f"({_cond(i)})" if isinstance(i, ast.Or) else _cond(i) for i in c.items)
    inner = c.item
    return "not " + (f"({_cond(inner)})" if isinstance(inner, ast.And | ast.Or) else _cond(inner))


def _qualifier(q: ast.Qualifier) -> str:
    if isinstance(q, ast.Region):
        return f" region [{q.row_start.text}:{q.row_end.text}, {q.col_start.text}:{q.col_end.text}]"
    if isinstance(q, ast.Where):
        return f" where {_compare(q.cond)}"
    return f" tokens {q.start.text}..{q.end.text}"


def _scope(s: ast.Scope) -> str:
    return s.kind + "".join(_qualifier(q) for q in s.qualifiers) + _layers(s.layers)


# ---- statements --------------------------------------------------------------------------------


def format_stmt(s: ast.Stmt) -> str:
    """One non-block statement on one line (blocks: their header line, without the `{`)."""
    match s:
        case ast.Header(key=key, value=value):
            return f"{key} {_string(value.value)}"
        case ast.Generate(count=count):
            return f"generate {count.text} tokens"
        case ast.Let(name=name, expr=expr):
            return f"let {name} = {format_expr(expr)}"
        case ast.Chain(name=name, links=links, force=force):
            path = " -> ".join(_primary(link.expr) + _layers(link.layers) for link in links)
            return ("force " if force else "") + f"chain {name}: {path}"
        case ast.Steer(scope=scope):
            return f"steer {_scope(scope)}"
        case ast.When(cond=cond):
            return f"when {_cond(cond)}"
        case ast.Trace(targets=targets):
            return "trace " + ", ".join(_primary(t) for t in targets)
        case ast.ExpectText(has=has, text=text):
            return f"expect output {'has' if has else 'lacks'} {_string(text.value)}"
        case ast.ExpectConcept(cond=cond):
            return f"expect {_compare(cond)}"
        case ast.Off(target=t):
            return f"off {_primary(t)}"
        case ast.On(target=t):
            return f"on {_primary(t)}"
        case ast.Set(target=t, value=v):
            return f"set {_primary(t)} = {v.text}"
        case ast.Scale(target=t, factor=k):
            return f"scale {_primary(t)} by {k.text}"
        case ast.Clamp(target=t, low=lo, high=hi):
            return f"clamp {_primary(t)} to [{lo.text}, {hi.text}]"
        case ast.Add(target=t, strength=k):
            return f"add {_primary(t)}" + (f" * {k.text}" if k is not None else "")
        case ast.Replace(target=t, replacement=r):
            return f"replace {_primary(t)} with {_primary(r)}"
    raise TypeError(f"not a statement: {s!r}")


# ---- layout with comments ----------------------------------------------------------------------


@dataclass
class _Entry:
    """One output line and the source lines it came from."""

    start: int
    end: int
    indent: int
    text: str
    opens: bool = False
    closes: bool = False
    comment: list[str] = field(default_factory=list)


def _emit(stmt: ast.Stmt, indent: int, out: list[_Entry]) -> None:
    span = stmt.span
    if isinstance(stmt, ast.Steer | ast.When):
        out.append(_Entry(span.line, span.end_line, indent, format_stmt(stmt) + " {", opens=True))
        for inner in stmt.body:
            _emit(inner, indent + 1, out)
        out.append(_Entry(stmt.end_line, stmt.end_line, indent, "}", closes=True))
    else:
        out.append(_Entry(span.line, span.end_line, indent, format_stmt(stmt)))


def _attach_comments(entries: list[_Entry], text: str) -> None:
    lines = text.split("\n")
    for tok in comments(text):
        line, col = tok.line or 1, tok.column or 1
        body = str(tok).rstrip()
        own_line = not lines[line - 1][: col - 1].strip()
        if not own_line:
            # The last entry covering this line takes it (for `{ off cat }  # x`, the `}`).
            owners = [e for e in entries if e.start <= line <= e.end]
            if owners:
                owners[-1].comment.append(body)
                continue
        after = next((i for i, e in enumerate(entries) if e.start > line), None)
        if after is None:
            entries.append(_Entry(line, line, 0, body))
        else:
            nxt = entries[after]
            indent = nxt.indent + 1 if nxt.closes else nxt.indent
            entries.insert(after, _Entry(line, line, indent, body))


def _render(entries: list[_Entry]) -> str:
    out: list[str] = []
    prev: _Entry | None = None
    for e in entries:
        if prev is not None and e.start > prev.end + 1 and not prev.opens and not e.closes:
            out.append("")  # keep one blank line where the source had some
        text = _INDENT * e.indent + e.text
        if e.comment:
            text += "  " + " ".join(e.comment)
        out.append(text)
        prev = e
    return "\n".join(out) + "\n" if out else ""

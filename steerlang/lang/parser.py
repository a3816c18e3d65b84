"""Source text -> `ast.Program`, with Lark errors turned into friendly `LangError`s.

The grammar is `grammar/steerlang.lark` (found by `steerlang.resources.data_path` in a checkout
or an installed wheel); the LALR parser is built once per process and reused.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from steerlang.lang import ast
from steerlang.lang.errors import Diagnostic, LangError, did_you_mean
from steerlang.resources import data_path

__all__ = ["parse", "lark_parser", "comments", "reserved_words"]


@functools.cache
def lark_parser() -> Lark:
    """The LALR parser for the language (built on first use, then cached)."""
    grammar = data_path("grammar", "steerlang.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False)


@functools.cache
def reserved_words() -> frozenset[str]:
    """Keywords of the language: they cannot name a concept or a chain."""
    return frozenset(
        str(t.pattern.value) for t in lark_parser().terminals
        if t.pattern.type == "str" and str(t.pattern.value).isidentifier()
    )


def parse(text: str, file: str = "<string>") -> ast.Program:
    """Parse program text into an AST; raise `LangError` (never anything else) on a syntax error."""
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as exc:
        raise LangError([_syntax_diagnostic(exc, text, file)], {file: text}) from None
    except RecursionError:
        raise LangError([_whole_file(file, text, "program is nested too deeply")], {file: text}) from None
    too_deep = _too_deep(tree, file)
    if too_deep is not None:
        raise LangError([too_deep], {file: text})
    try:
        stmts = _Builder(file).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, _BadLiteral):
            bad = exc.orig_exc
            raise LangError([Diagnostic(bad.span, bad.message, bad.hint)], {file: text}) from None
        raise
    return ast.Program(file=file, statements=tuple(stmts), source=text)


def comments(text: str) -> list[Token]:
    """Every `# ...` comment token of (syntactically valid) text, in order, with line and column."""
    return [tok for tok in lark_parser().lex(text, dont_ignore=True) if tok.type == "COMMENT"]


MAX_DEPTH = 100
"""Deepest nesting of expressions, conditions and blocks (later passes recurse over the tree)."""


def _too_deep(tree: Tree, file: str) -> Diagnostic | None:
    # Iterative, so that the check itself cannot overflow the stack.
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            line, col = (meta.line, meta.column) if not getattr(meta, "empty", True) else (1, 1)
            return Diagnostic(ast.Span(file, line, col, line, col + 1),
                              f"program is nested too deeply (more than {MAX_DEPTH} levels)",
                              "split the expression with let")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return None


# ---- tree -> AST -------------------------------------------------------------------------------


class _BadLiteral(Exception):
    def __init__(self, span: ast.Span, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.span, self.message, self.hint = span, message, hint


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}


def _tok_span(file: str, tok: Token) -> ast.Span:
    return ast.Span(file, tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1, tok.end_column or 1)


@v_args(meta=True)
class _Builder(Transformer):
    """One method per grammar rule, each returning the AST node for it."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def _span(self, meta: Any) -> ast.Span:
        if getattr(meta, "empty", True):
            return ast.Span(self.file, 1, 1, 1, 1)
        return ast.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # literals
    def number(self, meta: Any, ch: list[Token]) -> ast.Num:
        text = "".join(str(t) for t in ch)
        value = float(text)
        span = self._span(meta)
        if not math.isfinite(value):
            raise _BadLiteral(span, f"number {text} is too large", "numbers must be finite")
        return ast.Num(value, text, span)

    def string(self, meta: Any, ch: list[Token]) -> ast.Str:
        raw = str(ch[0])[1:-1]
        out: list[str] = []
        i = 0
        while i < len(raw):
            c = raw[i]
            if c == "\\":
                nxt = raw[i + 1]
                if nxt not in _ESCAPES:
                    tok = ch[0]
                    col = (tok.column or 1) + 1 + i
                    span = ast.Span(self.file, tok.line or 1, col, tok.line or 1, col + 2)
                    raise _BadLiteral(span, f"unknown escape \\{nxt} in string", 'use \\" \\\\ \\n or \\t')
                out.append(_ESCAPES[nxt])
                i += 2
            else:
                out.append(c)
                i += 1
        return ast.Str("".join(out), self._span(meta))

    # concept expressions
    def ref(self, meta: Any, ch: list[Token]) -> ast.Ref:
        return ast.Ref(str(ch[0]), self._span(meta))

    def concept_id(self, meta: Any, ch: list[Token]) -> ast.ConceptId:
        space, _, index = str(ch[0]).partition("#")
        return ast.ConceptId(space, int(index), self._span(meta))  # type: ignore[arg-type]

    def concept_lit(self, meta: Any, ch: list[Any]) -> ast.ConceptLit:
        return ast.ConceptLit(ch[0].value, self._span(meta))

    def union(self, meta: Any, ch: list[ast.Expr]) -> ast.Union:
        return ast.Union(tuple(ch), self._span(meta))

    def weighted(self, meta: Any, ch: list[Any]) -> ast.Sum:
        span = self._span(meta)
        return ast.Sum((ast.Term(1, ch[0], ch[1], span),), span)

    def sum_op(self, meta: Any, ch: list[Any]) -> ast.Sum:
        left, op, right = ch
        sign = 1 if str(op) == "+" else -1
        # Left-associative: `a + b - c` arrives as ((a + b) - c); flattening the left sum keeps its meaning.
        left_terms = left.terms if isinstance(left, ast.Sum) else (_as_term(left),)
        term = _as_term(right, sign)
        return ast.Sum((*left_terms, term), self._span(meta))

    # edits
    def off(self, meta: Any, ch: list[Any]) -> ast.Off:
        return ast.Off(ch[0], self._span(meta))

    def on(self, meta: Any, ch: list[Any]) -> ast.On:
        return ast.On(ch[0], self._span(meta))

    def set(self, meta: Any, ch: list[Any]) -> ast.Set:
        return ast.Set(ch[0], ch[1], self._span(meta))

    def scale(self, meta: Any, ch: list[Any]) -> ast.Scale:
        return ast.Scale(ch[0], ch[1], self._span(meta))

    def clamp(self, meta: Any, ch: list[Any]) -> ast.Clamp:
        return ast.Clamp(ch[0], ch[1], ch[2], self._span(meta))

    def add(self, meta: Any, ch: list[Any]) -> ast.Add:
        return ast.Add(ch[0], ch[1] if len(ch) > 1 else None, self._span(meta))

    def replace(self, meta: Any, ch: list[Any]) -> ast.Replace:
        return ast.Replace(ch[0], ch[1], self._span(meta))

    # scopes
    def scope_kind(self, meta: Any, ch: list[Token]) -> str:
        return str(ch[0])

    def scope(self, meta: Any, ch: list[Any]) -> ast.Scope:
        kind, rest = ch[0], ch[1:]
        layers = rest.pop() if rest and isinstance(rest[-1], ast.Layers) else None
        return ast.Scope(kind, tuple(rest), layers, self._span(meta))

    def region(self, meta: Any, ch: list[ast.Num]) -> ast.Region:
        return ast.Region(ch[0], ch[1], ch[2], ch[3], self._span(meta))

    def where(self, meta: Any, ch: list[Any]) -> ast.Where:
        return ast.Where(ch[0], self._span(meta))

    def tokens(self, meta: Any, ch: list[Any]) -> ast.Tokens:
        return ast.Tokens(ch[1], ch[2], self._span(meta))

    def layer_one(self, meta: Any, ch: list[ast.Num]) -> ast.Layers:
        return ast.Layers("one", tuple(ch), self._span(meta))

    def layer_range(self, meta: Any, ch: list[ast.Num]) -> ast.Layers:
        return ast.Layers("range", tuple(ch), self._span(meta))

    def layer_list(self, meta: Any, ch: list[ast.Num]) -> ast.Layers:
        return ast.Layers("list", tuple(ch), self._span(meta))

    def block(self, meta: Any, ch: list[Any]) -> tuple[tuple[Any, ...], int]:
        return tuple(ch), meta.end_line

    def steer_stmt(self, meta: Any, ch: list[Any]) -> ast.Steer:
        body, end_line = ch[1]
        span = self._span(meta)
        return ast.Steer(ch[0], body, _head_span(span, ch[0].span), end_line)

    # conditions
    def comparison(self, meta: Any, ch: list[Any]) -> ast.Compare:
        modality, mspan = ch[3] if len(ch) > 3 else (None, None)
        return ast.Compare(ch[0], str(ch[1]), ch[2], modality, self._span(meta), mspan)  # type: ignore[arg-type]

    def modality(self, meta: Any, ch: list[Token]) -> tuple[str, ast.Span]:
        return str(ch[0]), self._span(meta)

    def or_(self, meta: Any, ch: list[Any]) -> ast.Or:
        return ast.Or(_flatten(ast.Or, ch), self._span(meta))

    def and_(self, meta: Any, ch: list[Any]) -> ast.And:
        return ast.And(_flatten(ast.And, ch), self._span(meta))

    def not_(self, meta: Any, ch: list[Any]) -> ast.Not:
        return ast.Not(ch[0], self._span(meta))

    def when_stmt(self, meta: Any, ch: list[Any]) -> ast.When:
        body, end_line = ch[1]
        span = self._span(meta)
        return ast.When(ch[0], body, _head_span(span, ch[0].span), end_line)

    # statements
    def _header(self, key: str, meta: Any, ch: list[Any]) -> ast.Header:
        return ast.Header(key, ch[0], self._span(meta))  # type: ignore[arg-type]

    def model_stmt(self, meta: Any, ch: list[Any]) -> ast.Header:
        return self._header("model", meta, ch)

    def dictionary_stmt(self, meta: Any, ch: list[Any]) -> ast.Header:
        return self._header("dictionary", meta, ch)

    def import_stmt(self, meta: Any, ch: list[Any]) -> ast.Header:
        return self._header("import", meta, ch)

    def ask_stmt(self, meta: Any, ch: list[Any]) -> ast.Header:
        return self._header("ask", meta, ch)

    def image_stmt(self, meta: Any, ch: list[Any]) -> ast.Header:
        return self._header("image", meta, ch)

    def generate_stmt(self, meta: Any, ch: list[Any]) -> ast.Generate:
        return ast.Generate(ch[0], self._span(meta))

    def let_stmt(self, meta: Any, ch: list[Any]) -> ast.Let:
        return ast.Let(str(ch[0]), _tok_span(self.file, ch[0]), ch[1], self._span(meta))

    def link(self, meta: Any, ch: list[Any]) -> ast.Link:
        return ast.Link(ch[0], ch[1] if len(ch) > 1 else None, self._span(meta))

    def chain_stmt(self, meta: Any, ch: list[Any]) -> ast.Chain:
        force = isinstance(ch[0], Token) and ch[0].type == "FORCE"
        if force:
            ch = ch[1:]
        name = ch[0]
        return ast.Chain(str(name), _tok_span(self.file, name), tuple(ch[1:]), force, self._span(meta))

    def trace_stmt(self, meta: Any, ch: list[Any]) -> ast.Trace:
        return ast.Trace(tuple(ch), self._span(meta))

    def expect_text(self, meta: Any, ch: list[Any]) -> ast.ExpectText:
        return ast.ExpectText(ch[0] == "has", ch[1], self._span(meta))

    def has_lacks(self, meta: Any, ch: list[Token]) -> str:
        return str(ch[0])

    def expect_concept(self, meta: Any, ch: list[Any]) -> ast.ExpectConcept:
        return ast.ExpectConcept(ch[0], self._span(meta))

    def start(self, meta: Any, ch: list[Any]) -> list[Any]:
        return ch


def _head_span(whole: ast.Span, head: ast.Span) -> ast.Span:
    # A block's diagnostics point at its header line, not at the whole block.
    return ast.Span(whole.file, whole.line, whole.col, head.end_line, head.end_col)


def _as_term(expr: Any, sign: int = 1) -> ast.Term:
    if isinstance(expr, ast.Sum) and len(expr.terms) == 1 and expr.terms[0].sign == 1:
        only = expr.terms[0]
        return ast.Term(sign, only.weight, only.expr, expr.span)  # type: ignore[arg-type]
    return ast.Term(sign, None, expr, expr.span)  # type: ignore[arg-type]


def _flatten(kind: type, items: list[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for item in items:
        out.extend(item.items if isinstance(item, kind) else (item,))
    return tuple(out)


# ---- syntax errors -----------------------------------------------------------------------------

# Readable names of terminals, for "expected ..." lists.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "CONCEPT_ID": "a concept id (image#N, text#N, joint#N)",
    "CMP": '">" or "<"',
    "$END": "end of file",
}
_STATEMENT_STARTS = {"MODEL", "DICTIONARY", "IMPORT", "ASK", "IMAGE", "GENERATE", "LET", "CHAIN", "FORCE", "STEER",
                     "WHEN", "TRACE", "EXPECT", "OFF", "ON", "SET", "SCALE", "CLAMP", "ADD", "REPLACE"}
_EXPR_STARTS = {"NAME", "CONCEPT_ID", "CONCEPT"}


def _terminal_text(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    for term in lark_parser().terminals:
        if term.name == name:
            if term.pattern.type == "str":
                return f'"{term.pattern.value}"'
            break
    return name.lower()


def _expected_text(expected: set[str]) -> str:
    names = set(expected)
    groups: list[str] = []
    if _STATEMENT_STARTS <= names:
        groups.append("a statement")
        names -= _STATEMENT_STARTS
    if _EXPR_STARTS <= names:
        groups.append("a concept (a name, concept \"...\" or image#N)")
        names -= _EXPR_STARTS | {"LPAR"}
    shown = sorted((_terminal_text(n) for n in names), key=lambda s: (s.startswith('"'), s))
    groups.extend(shown)
    if not groups:
        return ""
    if len(groups) == 1:
        return groups[0]
    return ", ".join(groups[:-1]) + " or " + groups[-1]


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    text = str(tok)
    if tok.type in ("NAME", "NUMBER", "STRING", "CONCEPT_ID"):
        kind = {"NAME": "name", "NUMBER": "number", "STRING": "string", "CONCEPT_ID": "concept id"}[tok.type]
        return f'{kind} "{text}"' if tok.type == "NAME" else f"{kind} {text}"
    if text.isidentifier():
        return f'keyword "{text}"'
    return f'"{text}"'


def _whole_file(file: str, text: str, message: str) -> Diagnostic:
    return Diagnostic(ast.Span(file, 1, 1, 1, 2), message)


def _end_span(file: str, text: str) -> ast.Span:
    lines = text.split("\n")
    line = len(lines)
    col = len(lines[-1]) + 1
    return ast.Span(file, line, col, line, col + 1)


def _syntax_diagnostic(exc: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = _expected_text(set(exc.accepts or exc.expected))
        if tok.type == "$END":
            span = _end_span(file, text)
            hint = "a `{` block is not closed" if "RBRACE" in (exc.accepts or exc.expected) else None
            return Diagnostic(span, f"unexpected end of file; expected {expected}", hint)
        span = _tok_span(file, tok)
        hint = None
        if tok.type not in ("NAME", "NUMBER", "STRING", "CONCEPT_ID") and str(tok).isidentifier() and (
            "NAME" in exc.expected
        ):
            message = f'"{tok}" is a reserved word; expected {expected}'
            return Diagnostic(span, message, "choose another name")
        elif tok.type == "NUMBER" and set(exc.expected) == {"NAME"}:
            hint = "a name starts with a letter or _"
        elif tok.type == "NAME":
            words = [str(t.pattern.value) for t in lark_parser().terminals
                     if t.name in exc.expected and t.pattern.type == "str" and str(t.pattern.value).isidentifier()]
            hint = did_you_mean(str(tok), words)
        return Diagnostic(span, f"unexpected {_describe(tok)}; expected {expected}", hint)
    if isinstance(exc, UnexpectedCharacters):
        line, col = exc.line, exc.column
        char = exc.char
        span = ast.Span(file, line, col, line, col + 1)
        if char == '"':
            return Diagnostic(span, "unterminated string", 'close it with " on the same line')
        return Diagnostic(span, f"unexpected character {char!r}")
    if isinstance(exc, UnexpectedEOF):
        return Diagnostic(_end_span(file, text), "unexpected end of file")
    return _whole_file(file, text, "syntax error")

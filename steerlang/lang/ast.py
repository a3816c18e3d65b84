"""The syntax tree of a .stl program: frozen dataclasses, one per construct, each with a `Span`.

The tree says what was *written* (names unresolved, numbers with their source text, layers as
written); `steerlang.lang.check` resolves it into the IR. The formatter prints it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Space = Literal["image", "text", "joint"]
ScopeKind = Literal["image", "prompt", "output", "all"]
Modality = Literal["image", "prompt", "output"]
CmpOp = Literal[">", "<"]


@dataclass(frozen=True)
class Span:
    """A source range: 1-based line and column of the start, and of the end (column exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int


# ---- literals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A number as written (`text` keeps the spelling for the formatter; `value` is its float)."""

    value: float
    text: str
    span: Span


@dataclass(frozen=True)
class Str:
    """A string literal, unescaped."""

    value: str
    span: Span


# ---- concept expressions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A name bound by `let` (or a chain name where one is allowed)."""

    name: str
    span: Span


@dataclass(frozen=True)
class ConceptLit:
    """`concept "cat"`: a concept looked up by name in the dictionary's concept table."""

    name: str
    span: Span


@dataclass(frozen=True)
class ConceptId:
    """`image#12`, `text#7`, `joint#3`: a latent by its index in one space of the dictionary."""

    space: Space
    index: int
    span: Span


@dataclass(frozen=True)
class Union:
    """`a | b | c`: the union of concepts (fires where any member fires)."""

    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class Term:
    """One term of a weighted sum: `sign weight * expr` (weight None means 1)."""

    sign: Literal[1, -1]
    weight: Num | None
    expr: Expr
    span: Span


@dataclass(frozen=True)
class Sum:
    """`0.5*a + 0.5*b`: a weighted sum of concept directions (also `2*a` alone)."""

    terms: tuple[Term, ...]
    span: Span


Expr = Ref | ConceptLit | ConceptId | Union | Sum


# ---- layers, scopes, conditions ----------------------------------------------------------------


@dataclass(frozen=True)
class Layers:
    """`at layer N` (form "one"), `at layers a..b` ("range", inclusive) or `at layers a, b` ("list")."""

    form: Literal["one", "range", "list"]
    numbers: tuple[Num, ...]
    span: Span


@dataclass(frozen=True)
class Region:
    """`region [r0:r1, c0:c1]`: rows and columns as fractions of the image patch grid."""

    row_start: Num
    row_end: Num
    col_start: Num
    col_end: Num
    span: Span


@dataclass(frozen=True)
class Compare:
    """`F > t` or `F < t`, optionally `in image|prompt|output`."""

    target: Expr
    op: CmpOp
    threshold: Num
    modality: Modality | None
    span: Span
    modality_span: Span | None = None


@dataclass(frozen=True)
class Where:
    """`where F > t`: a data-dependent mask over image positions."""

    cond: Compare
    span: Span


@dataclass(frozen=True)
class Tokens:
    """`tokens a..b`: output token positions a to b inclusive."""

    start: Num
    end: Num
    span: Span


Qualifier = Region | Where | Tokens


@dataclass(frozen=True)
class Scope:
    """What a `steer` block applies to: a kind, its qualifiers as written, optional layers."""

    kind: ScopeKind
    qualifiers: tuple[Qualifier, ...]
    layers: Layers | None
    span: Span


@dataclass(frozen=True)
class And:
    """`a and b and ...`."""

    items: tuple[Cond, ...]
    span: Span


@dataclass(frozen=True)
class Or:
    """`a or b or ...`."""

    items: tuple[Cond, ...]
    span: Span


@dataclass(frozen=True)
class Not:
    """`not a`."""

    item: Cond
    span: Span


Cond = Compare | And | Or | Not


# ---- edits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Off:
    """`off F`: switch F off."""

    target: Expr
    span: Span


@dataclass(frozen=True)
class On:
    """`on F`: switch F on at its typical active value."""

    target: Expr
    span: Span


@dataclass(frozen=True)
class Set:
    """`set F = v`: fix F's activation to v."""

    target: Expr
    value: Num
    span: Span


@dataclass(frozen=True)
class Scale:
    """`scale F by k`: multiply F's activation by k."""

    target: Expr
    factor: Num
    span: Span


@dataclass(frozen=True)
class Clamp:
    """`clamp F to [a, b]`: keep F's activation within [a, b]."""

    target: Expr
    low: Num
    high: Num
    span: Span


@dataclass(frozen=True)
class Add:
    """`add F * k`: add k times F's direction, whatever F's activation (k None means 1)."""

    target: Expr
    strength: Num | None
    span: Span


@dataclass(frozen=True)
class Replace:
    """`replace F with G`: where F fires, F off and G on at a matched strength."""

    target: Expr
    replacement: Expr
    span: Span


Edit = Off | On | Set | Scale | Clamp | Add | Replace


# ---- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """`model "..."`, `dictionary "..."`, `import "..."`, `ask "..."` or `image "..."`."""

    key: Literal["model", "dictionary", "import", "ask", "image"]
    value: Str
    span: Span


@dataclass(frozen=True)
class Generate:
    """`generate N tokens`."""

    count: Num
    span: Span


@dataclass(frozen=True)
class Let:
    """`let name = expr`."""

    name: str
    name_span: Span
    expr: Expr
    span: Span


@dataclass(frozen=True)
class Link:
    """One link of a chain: a concept, optionally at given layers."""

    expr: Expr
    layers: Layers | None
    span: Span


@dataclass(frozen=True)
class Chain:
    """`[force] chain name: A -> B -> C`."""

    name: str
    name_span: Span
    links: tuple[Link, ...]
    force: bool
    span: Span


@dataclass(frozen=True)
class Steer:
    """`steer SCOPE [at layers] { body }`."""

    scope: Scope
    body: tuple[Stmt, ...]
    span: Span
    end_line: int


@dataclass(frozen=True)
class When:
    """`when COND { body }`: a rule evaluated at run time."""

    cond: Cond
    body: tuple[Stmt, ...]
    span: Span
    end_line: int


@dataclass(frozen=True)
class Trace:
    """`trace F, G`."""

    targets: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class ExpectText:
    """`expect output has "..."` / `expect output lacks "..."`."""

    has: bool
    text: Str
    span: Span


@dataclass(frozen=True)
class ExpectConcept:
    """`expect F < t in image`."""

    cond: Compare
    span: Span


Stmt = Header | Generate | Let | Chain | Steer | When | Trace | ExpectText | ExpectConcept | Edit


@dataclass(frozen=True)
class Program:
    """A parsed file: its statements in order, its name and its text."""

    file: str
    statements: tuple[Stmt, ...]
    source: str

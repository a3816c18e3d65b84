"""The IR: a checked, fully resolved program, as pydantic models the runtime consumes.

Every name is resolved: a concept is a list of weighted `ConceptRef`s; scopes, layers, numbers
and conditions are explicit. The IR serialises to JSON (`Program.model_dump_json()` /
`Program.model_validate_json()`), refuses unknown fields (`extra="forbid"`) and carries
`version`. It can be built directly from Python, without the language::

    from steerlang.lang import ir
    prog = ir.Program(steps=[ir.Steer(scope=ir.Scope(kind="image"), edits=[ir.Edit(op="off", target="cat")])])

(`target="cat"` is short for `ir.Concept(terms=[ir.Term(ref=ir.ConceptRef(name="cat"))])`.)

Semantics the runtime implements:

- `Concept.combine == "max"` (written `a | b`): a condition reads the largest member activation;
  an edit applies to every member as if written once per member (weights are 1).
- `Concept.combine == "sum"` (written `0.5*a + 0.5*b`, or a single concept): a condition reads
  sum(w_i * a_i); an edit applies to each member with its strength scaled by w_i.
- `layers: None` means every layer the dictionary has (for a concept: every layer it exists at).
- Ranges (`TokenRange`, layers written `a..b`) are inclusive; layers arrive expanded to a list.
- A `Region` is in fractions of the patch grid: rows [row_start, row_end), columns [col_start, col_end).
- `Header.image` is a path as written, relative to the program file's folder.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Space = Literal["image", "text", "joint"]
Modality = Literal["image", "prompt", "output"]
ScopeKind = Literal["image", "image_region", "image_where", "prompt", "output", "output_tokens", "all"]
EditOp = Literal["off", "on", "set", "scale", "clamp", "add", "replace"]

__all__ = [
    "And",
    "Chain",
    "Compare",
    "Concept",
    "ConceptRef",
    "Condition",
    "Edit",
    "ExpectConcept",
    "ExpectText",
    "Expectation",
    "Header",
    "Link",
    "Not",
    "Or",
    "Program",
    "Region",
    "Scope",
    "Steer",
    "Step",
    "Term",
    "TokenRange",
    "When",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConceptRef(_Model):
    """One dictionary concept as the table resolved it.

    `name` is as written (`"cat"`, or `"image#12"` for an id). `space`/`index` locate the latent
    (`None` only when the program was checked without a concept table and named it by name);
    `canonical` is the table's own name (differs from `name` for an alias); `layers` are the
    layers the concept exists at (`None`: every layer of the dictionary).
    """

    name: str
    space: Space | None = None
    index: int | None = Field(default=None, ge=0)
    canonical: str | None = None
    layers: list[int] | None = None

    @property
    def key(self) -> str | None:
        """`space#index`, or None when unresolved."""
        return None if self.space is None or self.index is None else f"{self.space}#{self.index}"


class Term(_Model):
    """A concept with a weight (1 for plain concepts and union members)."""

    ref: ConceptRef
    weight: float = 1.0


class Concept(_Model):
    """A resolved concept expression: weighted terms combined by "sum" or "max" (see module doc).

    `label` is how the program wrote it (a let name, `concept "cat"` -> "cat", or the expression).
    """

    terms: list[Term] = Field(min_length=1)
    combine: Literal["sum", "max"] = "sum"
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        # Accept "cat" or a ConceptRef where a Concept is expected: building IR by hand stays short.
        if isinstance(data, str):
            return {"terms": [{"ref": {"name": data}}], "label": data}
        if isinstance(data, ConceptRef):
            return {"terms": [{"ref": data}], "label": data.name}
        return data

    @model_validator(mode="after")
    def _union_weights(self) -> Concept:
        if self.combine == "max" and any(t.weight != 1.0 for t in self.terms):
            raise ValueError('a "max" (union) concept has weight 1 on every term')
        return self


class Region(_Model):
    """Rows and columns of the image patch grid, as fractions in [0, 1] (start < end)."""

    row_start: float = Field(ge=0, le=1)
    row_end: float = Field(ge=0, le=1)
    col_start: float = Field(ge=0, le=1)
    col_end: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Region:
        if not (self.row_start < self.row_end and self.col_start < self.col_end):
            raise ValueError("region bounds must be ordered: row_start < row_end, col_start < col_end")
        return self


class TokenRange(_Model):
    """Output token positions `start..end`, inclusive, counted from the first generated token."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> TokenRange:
        if self.start > self.end:
            raise ValueError("token range start must be <= end")
        return self


class Compare(_Model):
    """`concept > threshold` or `<`, read in `modality` (None inside `image where`: the image)."""

    kind: Literal["compare"] = "compare"
    concept: Concept
    op: Literal[">", "<"] = ">"
    threshold: float
    modality: Modality | None = None


class And(_Model):
    """All of `items` hold."""

    kind: Literal["and"] = "and"
    items: list[Condition] = Field(min_length=2)


class Or(_Model):
    """Any of `items` holds."""

    kind: Literal["or"] = "or"
    items: list[Condition] = Field(min_length=2)


class Not(_Model):
    """`item` does not hold."""

    kind: Literal["not"] = "not"
    item: Condition


Condition = Annotated[Compare | And | Or | Not, Field(discriminator="kind")]


class Scope(_Model):
    """Where edits apply: positions (`kind` and its one qualifier) and layers (None: all).

    `region` is set exactly for "image_region", `where` for "image_where" (a data-dependent mask
    of the image positions where the comparison holds), `tokens` for "output_tokens".
    """

    kind: ScopeKind = "all"
    region: Region | None = None
    where: Compare | None = None
    tokens: TokenRange | None = None
    layers: list[int] | None = None

    @model_validator(mode="after")
    def _qualifier_matches_kind(self) -> Scope:
        for field, kind in (("region", "image_region"), ("where", "image_where"), ("tokens", "output_tokens")):
            if (getattr(self, field) is not None) != (self.kind == kind):
                raise ValueError(f"scope kind {self.kind!r}: `{field}` is given exactly when kind is {kind!r}")
        return self


class Edit(_Model):
    """One edit of a concept's activation.

    op        fields used
    off       -
    on        -           (its typical active value from the dictionary's statistics)
    set       value       (activation := value)
    scale     value       (activation *= value)
    clamp     low, high   (activation := min(max(activation, low), high))
    add       value       (h += value * direction, whatever the activation; default 1)
    replace   replacement (where target fires: target off, replacement on at a matched strength)
    """

    op: EditOp
    target: Concept
    value: float | None = None
    low: float | None = None
    high: float | None = None
    replacement: Concept | None = None

    @model_validator(mode="after")
    def _fields_match_op(self) -> Edit:
        if self.op == "add" and self.value is None:
            self.value = 1.0  # `add F` means `add F * 1`
        needs = {"set": {"value"}, "scale": {"value"}, "add": {"value"}, "clamp": {"low", "high"},
                 "replace": {"replacement"}}.get(self.op, set())
        for field in ("value", "low", "high", "replacement"):
            if (getattr(self, field) is not None) != (field in needs):
                raise ValueError(f"edit {self.op!r}: `{field}` is {'required' if field in needs else 'not allowed'}")
        if self.op == "clamp" and self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("clamp: low must be <= high")
        return self


class Steer(_Model):
    """A `steer` block: edits applied within a scope, at every forward pass of generation."""

    kind: Literal["steer"] = "steer"
    scope: Scope = Field(default_factory=Scope)
    edits: list[Edit] = Field(default_factory=list)


class When(_Model):
    """A rule: while `condition` holds (evaluated at run time), the `steps` apply.

    Edits written directly in a `when` body arrive as a `Steer` with scope "all".
    """

    kind: Literal["when"] = "when"
    condition: Condition
    steps: list[Steer] = Field(default_factory=list)


Step = Annotated[Steer | When, Field(discriminator="kind")]


class Link(_Model):
    """One link of a chain: a concept, at `layers` (None: every layer)."""

    concept: Concept
    layers: list[int] | None = None


class Chain(_Model):
    """An ordered path of concepts; the runtime traces every chain, and forces it if `force`."""

    name: str
    links: list[Link] = Field(min_length=2)
    force: bool = False


class ExpectText(_Model):
    """`expect output has "x"` (has=True) or `lacks` (has=False): a check on the generated text."""

    kind: Literal["text"] = "text"
    has: bool = True
    text: str


class ExpectConcept(_Model):
    """`expect F < t in image`: a check on the concept's activation during the run."""

    kind: Literal["concept"] = "concept"
    condition: Compare


Expectation = Annotated[ExpectText | ExpectConcept, Field(discriminator="kind")]


class Header(_Model):
    """What to run on: model, dictionary, prompt (`ask`), image path, tokens to generate."""

    model: str | None = None
    dictionary: str | None = None
    ask: str | None = None
    image: str | None = None
    generate: int | None = Field(default=None, ge=1)


class Program(_Model):
    """A whole checked program.

    `bindings` maps every `let` name (imported ones included) to its concept; `steps` are the
    `steer` blocks and `when` rules in program order; `traces` the concepts to record;
    `imports` the imported files as resolved paths.
    """

    version: Literal[1] = 1
    source: str | None = None
    header: Header = Field(default_factory=Header)
    imports: list[str] = Field(default_factory=list)
    bindings: dict[str, Concept] = Field(default_factory=dict)
    chains: list[Chain] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    traces: list[Concept] = Field(default_factory=list)
    expectations: list[Expectation] = Field(default_factory=list)


for _model in (And, Or, Not, When, Program):
    _model.model_rebuild()

"""IR -> hook plan: every edit resolved against the concept set, with its layers and gates.

`compile_plan(program, concept_set, ...)` is pure bookkeeping (no model is run): it resolves every
concept of the IR to the concept set's latent groups, checks that each layer exists and has a
dictionary that fits the model, flattens `steer` blocks, `when` rules and forced chains into one
ordered list of `PlannedEdit`s, and collects, per layer and modality, the latents the hooks must
compute (the sparse path computes only these). Errors are `SteerError`s raised before anything
touches the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from steerlang.dictionary.concepts import Concept as DictConcept
from steerlang.dictionary.concepts import ConceptSet, LatentGroup
from steerlang.errors import DictionaryError, InputError
from steerlang.lang import ir

MODALITIES: tuple[Literal["image", "text"], ...] = ("image", "text")

__all__ = ["concept_label", "CAnd", "CCompare", "CConcept", "CNot", "COr", "Cond", "HookPlan", "PlannedEdit", "compile_plan"]


@dataclass(frozen=True, eq=False)
class CConcept:
    """A compiled concept: dictionary concepts with weights, combined by "sum" or "max"."""

    label: str
    terms: tuple[tuple[DictConcept, float], ...]
    combine: Literal["sum", "max"] = "sum"

    def groups(self, layer: int, modality: str) -> list[tuple[LatentGroup, float, DictConcept]]:
        out = []
        for c, w in self.terms:
            g = c.group(layer, modality)  # type: ignore[arg-type]
            if g is not None:
                out.append((g, w, c))
        return out

    def has_layer(self, layer: int) -> bool:
        return any(c.group(layer, m) is not None for c, _w in self.terms for m in MODALITIES)  # type: ignore[arg-type]

    @property
    def layers(self) -> list[int]:
        return sorted({g.layer for c, _w in self.terms for g in c.groups})

    def read_layer(self, layer: int) -> int | None:
        """Where a condition on this concept is read when editing at `layer`: that layer if it has a
        group there, else the lowest layer with a group (None: no group anywhere)."""
        if self.has_layer(layer):
            return layer
        layers = self.layers
        return layers[0] if layers else None

    def threshold(self, layer: int) -> float:
        ts = [g.threshold for c, _w in self.terms for m in MODALITIES if (g := c.group(layer, m)) is not None]  # type: ignore[arg-type]
        return min(ts) if ts else 0.3


@dataclass(frozen=True, eq=False)
class CCompare:
    concept: CConcept
    op: Literal[">", "<"]
    threshold: float
    modality: Literal["image", "prompt", "output"]


@dataclass(frozen=True, eq=False)
class CAnd:
    items: tuple[Cond, ...]


@dataclass(frozen=True, eq=False)
class COr:
    items: tuple[Cond, ...]


@dataclass(frozen=True, eq=False)
class CNot:
    item: Cond


Cond = CCompare | CAnd | COr | CNot


@dataclass(eq=False)
class PlannedEdit:
    """One edit at its layers, with its scope, the rule that gates it and (forced chains) a mask."""

    op: str
    target: CConcept
    scope: ir.Scope
    layers: tuple[int, ...]
    value: float | None = None
    low: float | None = None
    high: float | None = None
    replacement: CConcept | None = None
    where: CCompare | None = None  # image_where scope's comparison
    condition: Cond | None = None  # from a `when` rule
    active_of: CConcept | None = None  # forced chain link: only where this concept is active


@dataclass
class HookPlan:
    """What the hooks do: edits in program order, and what to compute at each layer."""

    concept_set: ConceptSet
    edits: list[PlannedEdit]
    traced: list[CConcept]
    chains: list[tuple[str, list[tuple[CConcept, tuple[int, ...]]], bool]]
    layers: list[int] = field(default_factory=list)  # layers to hook
    latents: dict[tuple[int, str], Tensor] = field(default_factory=dict)  # (layer, modality) -> sorted global idx
    dense: bool = False
    fused: dict = field(default_factory=dict, repr=False, compare=False)  # the hooks' per-layer decode-step maps, built on first use

    def saes(self, layer: int, modality: str):  # noqa: ANN201 - steerlang.dictionary.sae.SAE
        return self.concept_set.sae(layer, modality)

    @property
    def is_empty(self) -> bool:
        return not self.edits and not self.traced


def concept_label(c: ir.Concept) -> str:
    """How traces and expectations name a concept: its label, else the expression."""
    if c.label:
        return c.label
    sep = " | " if c.combine == "max" else " + "
    return sep.join(t.ref.name if t.weight == 1 else f"{t.weight:g}*{t.ref.name}" for t in c.terms)


def _where(program: ir.Program) -> str:
    return f"{program.source}: " if program.source else ""


class _Compiler:
    def __init__(self, program: ir.Program, cs: ConceptSet, n_layers: int) -> None:
        self.program, self.cs, self.n_layers = program, cs, n_layers
        self.cache: dict[str, CConcept] = {}

    def concept(self, c: ir.Concept) -> CConcept:
        key = c.model_dump_json()
        if key in self.cache:
            return self.cache[key]
        terms = []
        for t in c.terms:
            ref = t.ref
            # A checked program carries each concept's key and the table's name for it; both must
            # still hold, or the program was checked against another dictionary (or a rebuilt one
            # whose latent ids moved). Hand-written IR may carry the name only.
            if ref.key is not None:
                found = self.cs.by_key(ref.key)
                if found is not None and ref.canonical is not None and found.name != ref.canonical:
                    raise InputError(f"{_where(self.program)}concept {ref.name!r} was checked as {ref.key} "
                                     f"({ref.canonical!r}), which dictionary {self.cs.name!r} calls {found.name!r}: "
                                     f"check the program again against this dictionary")
            else:
                found = self.cs.by_name(ref.canonical or ref.name)
            if found is None:
                raise InputError(f"{_where(self.program)}unknown concept {ref.name!r} in dictionary {self.cs.name!r} "
                                 f"(was the program compiled against another dictionary?)")
            terms.append((found, t.weight))
        label = concept_label(c)
        cc = CConcept(label, tuple(terms), c.combine)
        self.cache[key] = cc
        return cc

    def compare(self, c: ir.Compare, default: str) -> CCompare:
        return CCompare(self.concept(c.concept), c.op, c.threshold, c.modality or default)  # type: ignore[arg-type]

    def condition(self, c: ir.Condition) -> Cond:
        if isinstance(c, ir.Compare):
            return self.compare(c, "image")  # a checked rule always says; hand-written IR may not
        if isinstance(c, ir.And):
            return CAnd(tuple(self.condition(i) for i in c.items))
        if isinstance(c, ir.Or):
            return COr(tuple(self.condition(i) for i in c.items))
        return CNot(self.condition(c.item))

    def check_layers(self, layers: list[int]) -> None:
        for layer in layers:
            if not 0 <= layer <= self.n_layers:
                raise InputError(f"{_where(self.program)}layer {layer} is out of range: the model has layers 0 to {self.n_layers}")
            if layer not in self.cs.layer_numbers:
                raise DictionaryError(f"{_where(self.program)}no dictionary at layer {layer}; layers with a dictionary: "
                                      f"{', '.join(map(str, self.cs.layer_numbers))}")

    def edit_layers(self, scope: ir.Scope, *concepts: CConcept | None) -> tuple[int, ...]:
        if scope.layers is not None:
            self.check_layers(scope.layers)
            return tuple(sorted(set(scope.layers)))
        for c in concepts:  # raw SAEs: latent N of one layer's SAE is unrelated to latent N of another's
            for dc, _w in c.terms if c is not None else ():
                if dc.evidence.get("raw") and len(dc.layers) > 1:
                    raise InputError(f"{_where(self.program)}{dc.key} names latent {dc.index} of a different SAE at each of "
                                     f"layers {', '.join(map(str, dc.layers))}: say which one by adding `at layer "
                                     f"{dc.layers[0]}` (or another of them) to the steer line")
        return tuple(sorted({layer for c in concepts if c is not None for layer in c.layers}))

    def steer(self, s: ir.Steer, condition: Cond | None) -> list[PlannedEdit]:
        out = []
        where = self.compare(s.scope.where, "image") if s.scope.where is not None else None
        for e in s.edits:
            target = self.concept(e.target)
            repl = self.concept(e.replacement) if e.replacement is not None else None
            out.append(PlannedEdit(e.op, target, s.scope, self.edit_layers(s.scope, target, repl), e.value, e.low, e.high,
                                   repl, where, condition))
        return out


def _cond_compares(c: Cond | None) -> list[CCompare]:
    if c is None:
        return []
    if isinstance(c, CCompare):
        return [c]
    if isinstance(c, CNot):
        return _cond_compares(c.item)
    return [x for i in c.items for x in _cond_compares(i)]


def compile_plan(program: ir.Program, concept_set: ConceptSet, *, n_layers: int, hidden_size: int,
                 dense: bool = False, trace: bool = True) -> HookPlan:
    """Resolve and flatten `program` against `concept_set` for a model with `n_layers` blocks.

    `trace=False` drops traces (and the concepts only expectations read), for timing runs.
    """
    comp = _Compiler(program, concept_set, n_layers)
    for c in program.bindings.values():  # an unused binding must still resolve
        comp.concept(c)
    edits: list[PlannedEdit] = []
    for step in program.steps:
        if isinstance(step, ir.Steer):
            edits += comp.steer(step, None)
        else:
            cond = comp.condition(step.condition)
            for s in step.steps:
                edits += comp.steer(s, cond)
    chains = []
    for ch in program.chains:
        links = []
        for link in ch.links:
            cc = comp.concept(link.concept)
            if link.layers is not None:
                comp.check_layers(link.layers)
            links.append((cc, tuple(sorted(set(link.layers))) if link.layers is not None else tuple(cc.layers)))
        chains.append((ch.name, links, ch.force))
        if ch.force:
            for i, (cc, layers) in enumerate(links):
                prev = links[i - 1][0] if i else cc
                edits.append(PlannedEdit("on", cc, ir.Scope(kind="all"), layers, active_of=prev))
    traced: list[CConcept] = []
    if trace:
        wanted = [comp.concept(c) for c in program.traces]
        wanted += [cc for _n, links, _f in chains for cc, _l in links]
        wanted += [comp.concept(x.condition.concept) for x in program.expectations if isinstance(x, ir.ExpectConcept)]
        for cc in wanted:
            if all(cc is not t for t in traced):
                traced.append(cc)

    # Latents and layers each hook needs.
    need: dict[tuple[int, str], set[int]] = {}
    hooked: set[int] = set()

    def want(cc: CConcept | None, layer: int | None) -> None:
        if cc is None or layer is None:
            return
        hooked.add(layer)
        for m in MODALITIES:
            for g, _w, _c in cc.groups(layer, m):
                need.setdefault((layer, m), set()).update(g.latents + g.extent)

    for e in edits:
        for layer in e.layers:
            comp.check_layers([layer])
            want(e.target, layer)
            want(e.replacement, layer)
            for cc in [c.concept for c in _cond_compares(e.condition)] + ([e.where.concept] if e.where else []) + (
                    [e.active_of] if e.active_of else []):
                want(cc, cc.read_layer(layer))
    for cc in traced:
        for layer in cc.layers:
            want(cc, layer)
    latents: dict[tuple[int, str], Tensor] = {}
    for (layer, m), idx in sorted(need.items()):  # never empty: a latent group has at least one latent
        sae = concept_set.sae(layer, m)  # DictionaryError if the concept set lacks it
        if sae.cfg.d_in != hidden_size:
            raise DictionaryError(f"the {m} dictionary at layer {layer} has d_in {sae.cfg.d_in} but the model's hidden size is "
                                  f"{hidden_size}: the dictionary {concept_set.name!r} was trained on another model")
        bad = [i for i in idx if not 0 <= i < sae.cfg.d_sae]
        if bad:
            raise DictionaryError(f"{concept_set.root}: latent {bad[0]} is out of range for the {m} dictionary at layer {layer} "
                                  f"({sae.cfg.d_sae} latents)")
        latents[(layer, m)] = torch.tensor(sorted(idx), dtype=torch.long)
    return HookPlan(concept_set, edits, traced, chains, sorted(hooked), latents, dense)

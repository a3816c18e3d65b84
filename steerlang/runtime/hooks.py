"""The hook engine: a compiled `HookPlan` as forward hooks, installed only inside a `with` block.

    with Steerer(adapter, plan) as st:
        model.generate(...)          # edits at prefill and at every decode step
    st.trace                         # post-edit activations of the traced concepts

One pre-hook on the base model sees every forward call's `input_ids` and cache length and keeps
the `Layout` (what each position is; see masks.py). One hook per edited layer then, at each call:

1. computes the latents the plan needs at that layer, per modality, on that modality's positions
   only (image positions use the image SAE, prompt/output positions the text SAE): with
   `encode_latents` for ReLU/JumpReLU (the sparse path), or a full encode then a gather (TopK, or
   `dense=True`);
2. updates the rule stores (max activation per sample in image / prompt / output so far) and
   evaluates rules per sample and position (an `in output` test at a position reads the max over
   the output positions up to it, so a call that re-runs the whole sequence without a KV cache
   gates each position as the cached step that first computed it did), and the where-masks per
   position, from the pre-edit activations;
3. applies the edits in program order to a copy of the latents, and writes back
   `h' = h + decode_delta(z' - z, idx)` only where the delta is non-zero (an empty edit leaves `h`
   untouched, bit for bit); `add` adds a direction; `off`/`replace` on image positions overwrite
   the hidden state with the blank image's state (or the replacement's prototype) at that patch;
4. records the traced concepts' activations on the edited state.

Hooks are removed in `finally`: after any exception (KeyboardInterrupt included) the model is as
it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from steerlang.dictionary.sae import SAE
from steerlang.errors import InputError, SteerError
from steerlang.runtime.adapters import ModelAdapter
from steerlang.runtime.masks import IMAGE, OUTPUT, PROMPT, Layout, Positions, close_on_grid, scope_mask
from steerlang.runtime.plan import (
    MODALITIES,
    CAnd,
    CCompare,
    CConcept,
    CNot,
    Cond,
    COr,
    HookPlan,
    PlannedEdit,
)
from steerlang.runtime.trace import Trace

__all__ = ["Steerer", "cached_length"]

_STORE_KINDS = {"image": (IMAGE,), "prompt": (PROMPT,), "output": (OUTPUT,)}


def _masked_max(a: Tensor, mask: Tensor) -> Tensor:
    """[B, T], [B, T] bool -> [B] max over the masked positions (-inf where none)."""
    return a.masked_fill(~mask, float("-inf")).amax(dim=1) if a.shape[1] else torch.full((a.shape[0],), float("-inf"))


def _set_codes(g: Any, pos_w: Tensor, value: Tensor | float, norm_cache: dict) -> Tensor | None:
    """The codes `set` writes into a group's latents so that it reads `value` (per row when `value`
    is a tensor): value * scale / ||w+||^2 * w+ (w+ the positive weights, float32). None: the group
    has no positive weight, so it cannot be switched on."""
    key = (g.latents, g.weights, "norm")
    norm = norm_cache.get(key)
    if norm is None:
        norm = norm_cache[key] = float((pos_w**2).sum())
    if norm == 0:
        return None
    v = value if isinstance(value, Tensor) else torch.tensor(value)
    v = v.reshape(-1, 1) if v.dim() else v
    return v * g.scale / norm * pos_w


def _add_vectors(e: PlannedEdit, layer: int, m: str, sae: Any) -> list[Tensor]:
    """The hidden-state vectors an `add` edit adds at one layer and modality, one per group of its
    target with a non-zero decoder direction: value * weight * scale * d / ||d||, d = w @ W_dec[latents]."""
    out = []
    for g, w, _c in e.target.groups(layer, m):
        weight = w if e.target.combine == "sum" else 1.0
        d = torch.tensor(g.weights, dtype=sae.W_dec.dtype) @ sae.W_dec.detach()[list(g.latents)]
        norm = d.norm()
        if float(norm) == 0:
            continue
        out.append((float(e.value) * weight * g.scale / norm) * d)  # type: ignore[arg-type]
    return out


class _Fused:
    """One layer's edits at a decode step as one affine map on the edited latents.

    At a decode step every position is an output position, so an edit's scope is either every
    position (`all`, `output`) or none (the image, a region of it, the prompt); when no edit at the
    layer has a rule, a chain link, a read-dependent target (`replace`, `clamp`) or a trace, the
    whole program at this layer is, per latent column j, z'_j = a_j z_j + b_j (off: a = 0 or 1;
    set / on: a = 0, b = the set codes; scale: a, b times k), composed once in program order, plus
    one constant vector (the `add` edits). A step is then: encode the plan's latents (sparse or
    dense as the plan says), z' = z * a + b, h + decode_delta(z' - z), + the added vector: a few
    tensor operations and no data-dependent branch, however many edits there are. The values are
    those of the general path (each edit in turn) up to float rounding: two `scale`s of one latent
    compose into one factor, and the decode runs over every row of the step, not only the changed
    ones (a matrix product may round differently with another number of rows).
    """

    def __init__(self, st: Steerer, layer: int, edits: list[PlannedEdit]) -> None:
        self.sae = None
        self.idx = st.plan.latents.get((layer, "text"))
        self.a: Tensor | None = None
        self.b: Tensor | None = None
        self.adds: list[Tensor] = []
        self.only_add = False
        self._on: dict[tuple, tuple] = {}  # (device, dtype) -> the tensors of a call on that device
        if self.idx is None or not edits:
            return  # nothing in scope at a decode step, or no text latents here: the step is left as it is
        self.sae = st.plan.saes(layer, "text")
        self.sparse = not (st.plan.dense or self.sae.cfg.architecture == "topk")
        k = len(self.idx)
        dtype = self.sae.W_enc.dtype
        a, b = torch.ones(k, dtype=dtype), torch.zeros(k, dtype=dtype)
        for e in edits:
            if e.op == "add":
                self.adds += _add_vectors(e, layer, "text", self.sae)
                continue
            for g, w, _c in e.target.groups(layer, "text"):
                cols = torch.searchsorted(self.idx, torch.tensor(g.latents, dtype=torch.long))
                weights = torch.tensor(g.weights, dtype=torch.float32)
                if e.op == "off":
                    keep = (weights <= 0).to(dtype)
                    a[cols], b[cols] = a[cols] * keep, b[cols] * keep
                elif e.op in ("on", "set"):
                    v = 1.0 if e.op == "on" else float(e.value)  # type: ignore[arg-type]
                    codes = _set_codes(g, weights.clamp(min=0), v * (w if e.target.combine == "sum" else 1.0), st.norm_cache)
                    if codes is not None:
                        a[cols], b[cols] = 0.0, codes.to(dtype)
                else:  # scale
                    k_ = float(e.value)  # type: ignore[arg-type]
                    a[cols], b[cols] = a[cols] * k_, b[cols] * k_
        self.a, self.b = a, b
        if bool((a == 1).all()) and not bool(b.any()):
            if not self.adds:
                self.sae = None  # the edits cancel out (e.g. `scale by 1`): z' = z, nothing to compute
            self.only_add = True  # the latents stay: h + the added vector

    @staticmethod
    def build(st: Steerer, layer: int) -> _Fused | None:
        """The fused map of `layer`'s edits at decode steps, or None when an edit there needs the
        general path (a rule, a chain link, `replace` / `clamp`, a token range) or the layer is read
        for a rule or traced."""
        if st._observe.get(layer) or st._traced_at.get(layer):
            return None
        edits = []
        for e in st._by_layer.get(layer, []):
            if e.scope.kind in ("image", "image_region", "image_where", "prompt"):
                continue  # no position of a decode step is in these scopes
            if (e.scope.kind not in ("all", "output") or e.condition is not None or e.active_of is not None
                    or e.op not in ("off", "on", "set", "scale", "add")):
                return None
            edits.append(e)
        return _Fused(st, layer, edits)

    def _tensors(self, h: Tensor) -> tuple:
        key = (h.device, h.dtype)
        got = self._on.get(key)
        if got is None:
            assert self.idx is not None and self.a is not None and self.b is not None
            add = None
            for vec in self.adds:  # summed in the hidden state's dtype, in program order, as the general path does
                add = torch.zeros(h.shape[-1], dtype=h.dtype, device=h.device) if add is None else add
                add = add + vec.to(h.dtype).to(h.device)
            sae, idx = self.sae, self.idx.to(h.device)
            # The encoder columns and decoder rows of the plan's latents, gathered once (the sparse
            # path of the base SAE class; another class's own encode_latents is called as it is).
            enc = None
            if self.sparse and type(sae).encode_latents is SAE.encode_latents:
                enc = (sae.W_enc.detach()[:, idx], sae.b_enc.detach()[idx])
            dec = sae.W_dec.detach()[idx] if type(sae).decode_delta is SAE.decode_delta else None
            got = self._on[key] = (idx, self.a.to(h.device), self.b.to(h.device), add, enc, dec)
        return got

    def __call__(self, h: Tensor) -> Tensor | None:
        if self.sae is None:
            return None
        idx, a, b, add, enc, dec = self._tensors(h)
        if self.only_add:
            return h + add
        sae = self.sae
        x = h.reshape(-1, h.shape[-1]).to(sae.W_enc.dtype)
        if enc is not None:  # = sae.encode_latents(x, idx), without gathering the columns again
            z = sae._activation_at(sae.centred(x) @ enc[0] + enc[1], idx)
        else:
            z = sae.encode_latents(x, idx) if self.sparse else sae.encode(x)[:, idx]
        # z * a + b in one operation: it rounds as z * a, then + b would, since no column has both
        # a scale (a not 0 or 1) and a set code (b != 0): a set zeroes a, and later scales keep it 0.
        delta = torch.addcmul(b, z, a) - z
        # Every row is decoded: a row whose latents did not change gets h + 0 = h, the same values
        # the general path keeps by not touching it, without a data-dependent branch per step.
        out = h + (delta @ dec if dec is not None else sae.decode_delta(delta, idx)).to(h.dtype).view_as(h)
        return out if add is None else out + add


class _Layer:
    """The work of one hook call: latents, activations and edits at one layer."""

    def __init__(self, st: Steerer, layer: int, h: Tensor) -> None:
        self.st, self.layer, self.h = st, layer, h
        self.pos: Positions = st.pos  # type: ignore[assignment]
        self.sel = {"image": self.pos.of(IMAGE).to(h.device), "text": self.pos.of(PROMPT, OUTPUT).to(h.device)}
        self.z: dict[str, Tensor | None] = {}
        self.z_new: dict[str, Tensor] = {}
        self.write_mask: Tensor | None = None
        self.write_val: Tensor | None = None
        self.add: Tensor | None = None
        self._acts: dict[int, Tensor] = {}

    # -- latents and activations ------------------------------------------------------------
    def latents(self, m: str) -> Tensor | None:
        """[N_m, k] the plan's latents at this layer on modality m's positions (None: none)."""
        if m not in self.z:
            idx = self.st.plan.latents.get((self.layer, m))
            if idx is None or not bool(self.sel[m].any()):
                self.z[m] = None
            else:
                sae = self.st.plan.saes(self.layer, m)
                x = self.h[self.sel[m]].to(sae.W_enc.dtype)
                if self.st.plan.dense or sae.cfg.architecture == "topk":
                    self.z[m] = sae.encode(x)[:, idx.to(x.device)]
                else:
                    self.z[m] = sae.encode_latents(x, idx.to(x.device))
        return self.z[m]

    def cols(self, m: str, latents: tuple[int, ...]) -> Tensor:
        """Columns of `latents` among the plan's latents at (this layer, m); cached per steerer."""
        key = (self.layer, m, latents)
        got = self.st.col_cache.get(key)
        if got is None or got.device != self.h.device:
            idx = self.st.plan.latents[(self.layer, m)]
            got = torch.searchsorted(idx, torch.tensor(latents, dtype=torch.long)).to(self.h.device)
            self.st.col_cache[key] = got
        return got

    def weights(self, g: Any, dtype: torch.dtype, field: str = "weights") -> Tensor:
        """A group's weights (or offsets, or latents) as a tensor on this layer's device; cached per steerer."""
        values = getattr(g, field)
        key = (g.latents, values, dtype, field)
        got = self.st.w_cache.get(key)
        if got is None or got.device != self.h.device:
            got = torch.tensor(values, dtype=dtype, device=self.h.device)
            self.st.w_cache[key] = got
        return got

    def term_activation(self, c: Any, m: str) -> Tensor | None:
        """[N_m] activation of one dictionary concept on modality m's positions (None: no group)."""
        g = c.group(self.layer, m)
        if g is not None and g.read != "code":
            return self._pre_activation(m, g)
        zz = self.latents(m)
        if g is None or zz is None:
            return None
        return (zz[:, self.cols(m, g.latents)] @ self.weights(g, zz.dtype)) / g.scale

    def _pre_activation(self, m: str, g: Any) -> Tensor | None:
        """[N_m] the activation of a group read before TopK from its latents' encoder
        pre-activations p on this call's hidden states (see LatentGroup): "pre" max_i (w_i p_i +
        offsets_i), "linear" sum_i w_i p_i + offsets_0."""
        if not bool(self.sel[m].any()) or (self.layer, m) not in self.st.plan.latents:
            return None
        sae = self.st.plan.saes(self.layer, m)
        x = self.h[self.sel[m]].to(sae.W_enc.dtype)
        pre = sae.pre_acts_at(x, self.weights(g, torch.long, "latents"))
        off = self.weights(g, pre.dtype, "offsets")
        if g.read == "linear":
            return pre @ self.weights(g, pre.dtype) + off[0]
        return (pre * self.weights(g, pre.dtype) + off).amax(dim=1)

    def activation(self, cc: CConcept) -> Tensor:
        """[B, T] activation of a compiled concept at this layer (0 where it has no group)."""
        if id(cc) in self._acts:
            return self._acts[id(cc)]
        out: Tensor | None = None
        for c, w in cc.terms:
            a = torch.zeros(self.pos.shape, dtype=torch.float32, device=self.h.device)
            for m in MODALITIES:
                t = self.term_activation(c, m)
                if t is not None:
                    a[self.sel[m]] = t.float()
            if out is None:
                out = a * w if cc.combine == "sum" else a
            else:
                out = out + a * w if cc.combine == "sum" else torch.maximum(out, a)
        assert out is not None
        self._acts[id(cc)] = out
        return out

    def read(self, cc: CConcept) -> Tensor:
        """The activation a condition or mask reads when editing at this layer (see CConcept.read_layer)."""
        lr = cc.read_layer(self.layer)
        if lr == self.layer:
            return self.activation(cc)
        cached = self.st.fwd_cache.get((id(cc), lr))
        return cached if cached is not None else torch.zeros(self.pos.shape, device=self.h.device)

    def observe(self, cc: CConcept) -> None:
        """Cache this forward's activation and update the per-sample rule stores."""
        a = self.activation(cc)
        self.st.fwd_cache[(id(cc), self.layer)] = a
        for name, kinds in _STORE_KINDS.items():
            mask = self.pos.of(*kinds).to(a.device)
            if not bool(mask.any()):
                continue
            key = (id(cc), self.layer, name)
            if name != "output":
                self.st.stores[key] = _masked_max(a, mask)
                continue
            # Per position: the max over the output positions up to it, after those of earlier calls
            # (none when this call starts at 0: a cache-less step re-runs every position).
            run = a.masked_fill(~mask, float("-inf")).cummax(dim=1).values  # [B, T]
            old = self.st.stores.get(key)
            if old is not None and self.pos.start > 0:
                run = torch.maximum(run, old[:, None])
            self.st.out_run[(id(cc), self.layer)] = run
            self.st.stores[key] = run[:, -1]

    def holds(self, cond: Cond) -> Tensor:
        """[B, T] bool: the rule's condition per sample and position of this call."""
        if isinstance(cond, CCompare):
            lr = cond.concept.read_layer(self.layer)
            v = self.st.out_run.get((id(cond.concept), lr)) if cond.modality == "output" else None
            if v is None:
                s = self.st.stores.get((id(cond.concept), lr, cond.modality))
                v = (torch.zeros(self.pos.shape[0]) if s is None else s)[:, None].expand(self.pos.shape)
            v = v.to(self.h.device)
            v = torch.where(torch.isinf(v), 0.0, v)
            return v > cond.threshold if cond.op == ">" else v < cond.threshold
        if isinstance(cond, CAnd):
            out = self.holds(cond.items[0])
            for c in cond.items[1:]:
                out = out & self.holds(c)
            return out
        if isinstance(cond, COr):
            out = self.holds(cond.items[0])
            for c in cond.items[1:]:
                out = out | self.holds(c)
            return out
        assert isinstance(cond, CNot)
        return ~self.holds(cond.item)

    # -- edits ------------------------------------------------------------------------------
    def _znew(self, m: str) -> Tensor:
        if m not in self.z_new:
            z = self.latents(m)
            assert z is not None
            self.z_new[m] = z.clone()
        return self.z_new[m]

    def _update(self, m: str, g: Any, rows: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
        """Apply fn to the group's latent columns on `rows` ([N_m] bool) of the edited copy."""
        z = self._znew(m)
        cols = self.cols(m, g.latents)
        sub = z[:, cols]
        z[:, cols] = torch.where(rows[:, None], fn(sub), sub)

    def _switch_off(self, m: str, g: Any, rows: Tensor) -> None:
        """Zero the codes of the group's positive-weight latents on `rows`; a negative weight marks
        evidence against the concept, which switching it off should not remove."""
        keep = self.weights(g, torch.float32) <= 0
        self._update(m, g, rows, lambda sub: sub * keep.to(sub.dtype))

    def _set_activation(self, m: str, g: Any, rows: Tensor, value: Tensor | float) -> None:
        codes = _set_codes(g, self.weights(g, torch.float32).clamp(min=0), value, self.st.norm_cache)
        if codes is not None:  # None: a group of negative weights only cannot be switched on
            self._update(m, g, rows, lambda sub: codes.to(sub.dtype).expand_as(sub))

    def _write(self, full: Tensor, values: Tensor) -> None:
        """Overwrite the hidden state at `full` ([B, T] bool) with `values` ([n, d])."""
        if self.write_mask is None:
            self.write_mask = torch.zeros(self.pos.shape, dtype=torch.bool, device=self.h.device)
            self.write_val = torch.zeros_like(self.h)
        assert self.write_val is not None
        self.write_mask |= full
        self.write_val[full] = values.to(self.h.dtype)

    def _full(self, m: str, rows: Tensor) -> Tensor:
        full = torch.zeros(self.pos.shape, dtype=torch.bool, device=self.h.device)
        full[self.sel[m]] = rows
        return full

    def _present(self, cc: CConcept, m: str, rows: Tensor, e: PlannedEdit) -> Tensor:
        """[N_m] bool: rows where any term of cc fires (the scope's where-mask when it has one).

        On image positions this is the object's mask: the marked patches, extended to neighbours
        where an `extent` latent of the concept fires, then closed on the patch grid
        (`close_on_grid`), kept inside the scope's image positions.
        """
        where = e.scope.kind == "image_where" and m == "image"
        present = rows.clone() if where else torch.zeros_like(rows)
        if not where:
            for g, _w, c in cc.groups(self.layer, m):
                a = self.term_activation(c, m)
                if a is not None:
                    present |= a > g.threshold
            present &= rows
        if m != "image":
            return present
        allowed = torch.ones_like(rows) if where else rows
        present = self._closed(present, allowed)
        ext = self._extent(cc)
        if ext is not None and bool(present.any()):
            near = close_on_grid(self._full("image", present), self.pos, dilate_only=True)[self.sel["image"]]
            present = self._closed(present | (near & ext & ~present), allowed)
        return present

    def _extent(self, cc: CConcept) -> Tensor | None:
        """[N_img] bool: where any extent latent of cc's image groups fires (None: it has none)."""
        z = self.latents("image")
        out = None
        for g, _w, _c in cc.groups(self.layer, "image"):
            if z is None or not g.extent:
                continue
            fired = (z[:, self.cols("image", g.extent)] > 0).any(1)
            out = fired if out is None else out | fired
        return out

    def _closed(self, present: Tensor, allowed: Tensor) -> Tensor:
        """`present` closed on the patch grid, kept inside the image rows the scope allows."""
        full = close_on_grid(self._full("image", present), self.pos)
        return full[self.sel["image"]] & allowed

    def _image_state(self, rows: Tensor, replacement: CConcept | None) -> tuple[Tensor, Tensor] | None:
        """(rows that get a state, states [n, d]): the replacement's prototype where seen, else the
        blank image's state, at each row's patch. None when the concept set has neither."""
        cs = self.st.plan.concept_set
        bg = cs.background(self.layer)
        proto = None
        if replacement is not None:
            for c, _w in replacement.terms:
                proto = cs.prototype(c, self.layer)
                if proto is not None:
                    break
        if bg is None and proto is None:
            return None
        patch = self.pos.patch.to(self.h.device)[self.sel["image"]]  # [N_img]
        n = (bg if bg is not None else proto[0]).shape[0]  # type: ignore[index]
        ok = rows & (patch >= 0) & (patch < n)
        p = patch.clamp(0, n - 1)
        states = torch.zeros(len(patch), self.h.shape[-1], device=self.h.device)
        have = torch.zeros_like(ok)
        if bg is not None:
            states[:] = bg.to(self.h.device)[p]
            have = torch.ones_like(ok)
        if proto is not None:
            seen = proto[1].to(self.h.device)[p] > 0
            states = torch.where(seen[:, None], proto[0].to(self.h.device)[p], states)
            have |= seen
        ok &= have
        return ok, states[ok]

    def apply(self, e: PlannedEdit, pm: Tensor) -> None:
        """Apply one edit at positions `pm` ([B, T] bool)."""
        for m in MODALITIES:
            rows = pm[self.sel[m]]
            if not bool(rows.any()):
                continue
            if e.op in ("off", "replace") and m == "image" and self.latents(m) is not None:
                present = self._present(e.target, m, rows, e)
                if not bool(present.any()):
                    continue
                got = self._image_state(present, e.replacement if e.op == "replace" else None)
                if got is not None:
                    ok, states = got
                    self._write(self._full(m, ok), states)
                    present = present & ~ok  # rows left without a state: the latent fallback below
                    if not bool(present.any()):
                        continue
                if e.op == "off":
                    for g, _w, _c in e.target.groups(self.layer, m):
                        self._switch_off(m, g, present)
                else:
                    self._replace_latents(e, m, present)
                continue
            if e.op == "replace":
                present = self._present(e.target, m, rows, e)
                if bool(present.any()):
                    self._replace_latents(e, m, present)
                continue
            if e.op == "add":
                self._add(e, m, rows)
                continue
            for g, w, _c in e.target.groups(self.layer, m):
                if self.latents(m) is None:
                    break
                weight = w if e.target.combine == "sum" else 1.0
                if e.op == "off":
                    self._switch_off(m, g, rows)
                elif e.op in ("on", "set"):
                    v = 1.0 if e.op == "on" else float(e.value)  # type: ignore[arg-type]
                    self._set_activation(m, g, rows, v * weight)
                elif e.op == "scale":
                    k = float(e.value)  # type: ignore[arg-type]
                    self._update(m, g, rows, lambda sub, k=k: sub * k)
                elif e.op == "clamp":
                    self._clamp(m, g, rows, float(e.low), float(e.high))  # type: ignore[arg-type]

    def _clamp(self, m: str, g: Any, rows: Tensor, low: float, high: float) -> None:
        z = self._znew(m)
        cols = self.cols(m, g.latents)
        a = (z[:, cols] @ self.weights(g, z.dtype)) / g.scale
        target = a.clamp(low, high)
        changed = rows & (target != a)
        if not bool(changed.any()):
            return
        scalable = changed & (a != 0)
        factor = torch.where(scalable, target / torch.where(a == 0, 1.0, a), 1.0)
        self._update(m, g, scalable, lambda sub: sub * factor[:, None])
        if bool((changed & ~scalable).any()):
            self._set_activation(m, g, changed & ~scalable, target)

    def _replace_latents(self, e: PlannedEdit, m: str, rows: Tensor) -> None:
        assert e.replacement is not None
        strength = self.activation(e.target)[self.sel[m]]
        for g, _w, _c in e.target.groups(self.layer, m):
            self._switch_off(m, g, rows)
        for g, w, _c in e.replacement.groups(self.layer, m):
            weight = w if e.replacement.combine == "sum" else 1.0
            self._set_activation(m, g, rows, strength * weight)

    def _add(self, e: PlannedEdit, m: str, rows: Tensor) -> None:
        sae = self.st.plan.saes(self.layer, m) if (self.layer, m) in self.st.plan.latents else None
        if sae is None:
            return
        full = self._full(m, rows)
        for vec in _add_vectors(e, self.layer, m, sae):
            if self.add is None:
                self.add = torch.zeros_like(self.h)
            self.add[full] += vec.to(self.h.dtype).to(self.h.device)

    def result(self) -> Tensor | None:
        """The edited hidden state, or None when nothing changed (the hook then returns nothing)."""
        out: Tensor | None = None
        for m, z_new in self.z_new.items():
            z = self.z[m]
            assert z is not None
            delta = z_new - z
            changed = (delta != 0).any(dim=-1)
            if not bool(changed.any()):
                continue
            sae = self.st.plan.saes(self.layer, m)
            idx = self.st.plan.latents[(self.layer, m)].to(delta.device)
            dh = sae.decode_delta(delta[changed], idx).to(self.h.dtype)
            full = self._full(m, changed)
            out = self.h.clone() if out is None else out
            out[full] = out[full] + dh
        if self.add is not None:
            out = (self.h.clone() if out is None else out) + self.add
        if self.write_mask is not None:
            assert self.write_val is not None
            out = self.h.clone() if out is None else out
            out = torch.where(self.write_mask[..., None], self.write_val, out)
        return out


class Steerer:
    """Context manager: the plan's hooks on the model while inside `with`; removed on exit."""

    def __init__(self, adapter: ModelAdapter, plan: HookPlan, *, trace: bool = True,
                 on_forward: Callable[[int], None] | None = None, fuse: bool = True) -> None:
        self.adapter, self.plan = adapter, plan
        self.fuse = fuse  # decode steps through each layer's `_Fused` map where it applies (False: always the general path)
        self.decoding = False
        self.trace_on = trace and bool(plan.traced)
        self.on_forward = on_forward
        self._handles: list[Any] = []
        self.layout: Layout | None = None
        self.pos: Positions | None = None
        self.fwd_cache: dict[tuple[int, int], Tensor] = {}
        self.stores: dict[tuple[int, int, str], Tensor] = {}
        self.out_run: dict[tuple[int, int], Tensor] = {}  # this call's per-position `in output` maxima
        self._buffers: dict[tuple[str, int], Tensor] = {}
        self.col_cache: dict[tuple[int, str, tuple[int, ...]], Tensor] = {}
        self.w_cache: dict[tuple, Tensor] = {}
        self.norm_cache: dict[tuple, float] = {}
        self._by_layer: dict[int, list[PlannedEdit]] = {}
        self._observe: dict[int, list[CConcept]] = {}
        for e in plan.edits:
            for layer in e.layers:
                self._by_layer.setdefault(layer, []).append(e)
                reads = [c.concept for c in _compares(e.condition)]
                for cc in reads:
                    lr = cc.read_layer(layer)
                    if lr is not None and all(cc is not x for x in self._observe.setdefault(lr, [])):
                        self._observe[lr].append(cc)
                for cc in ([e.where.concept] if e.where else []) + ([e.active_of] if e.active_of else []):
                    lr = cc.read_layer(layer)
                    if lr is not None and lr != layer and all(cc is not x for x in self._observe.setdefault(lr, [])):
                        self._observe[lr].append(cc)
        self._traced_at = {layer: [cc for cc in plan.traced if cc.has_layer(layer)] for layer in plan.layers} if self.trace_on else {}
        self.layers = sorted(set(self._by_layer) | set(self._observe) | {la for la, cs in self._traced_at.items() if cs})

    # -- installation -----------------------------------------------------------------------
    def __enter__(self) -> Steerer:
        try:
            base = self.adapter.base_model()
            self._handles.append(base.register_forward_pre_hook(self._on_base, with_kwargs=True))
            for layer in self.layers:
                module, is_pre = self.adapter.hook_point(layer)
                if is_pre:
                    self._handles.append(module.register_forward_pre_hook(self._pre(layer), with_kwargs=True))
                else:
                    self._handles.append(module.register_forward_hook(self._post(layer)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        while self._handles:
            self._handles.pop().remove()
        if hasattr(self.adapter, "_grids"):
            self.adapter._grids = None  # the last prefill's inputs (vision features included): not kept past the run

    def reset(self) -> None:
        """Forget the current generation (layout, rule stores, traces)."""
        self.layout, self.pos = None, None
        self.stores.clear()
        self._buffers.clear()

    # -- hooks ------------------------------------------------------------------------------
    def _on_base(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise InputError("steering needs input_ids: positions cannot be located from inputs_embeds alone")
        past = cached_length(args, kwargs, ids.shape[-1])
        if self.layout is None or not self.layout.continues(ids, past):
            if past:
                raise InputError("steering started in the middle of a generation (a non-empty KV cache): start a new generate inside the steering context")
            self.reset()
            cfg = self.adapter.text_config
            self.layout = Layout.from_prefill(ids.cpu(), None if kwargs.get("attention_mask") is None else kwargs["attention_mask"].cpu(),
                                              self.adapter.image_mask(ids).cpu(), lambda i: self.adapter.patch_grid({**kwargs, "input_ids": ids}, i),
                                              getattr(cfg, "bos_token_id", None))
        else:
            self.layout.steps += 1
        self.pos = self.layout.positions(past, ids.shape[1])
        self.decoding = past >= self.layout.prompt_len  # every position of this call is an output position
        self.fwd_cache, self.out_run = {}, {}
        if self.on_forward is not None:
            self.on_forward(self.layout.steps)

    def _pre(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            h = args[0] if args else kwargs["hidden_states"]
            new = self._edit(layer, h)
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def _post(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            h = output[0] if isinstance(output, tuple) else output
            new = self._edit(layer, h)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def _edit(self, layer: int, h: Tensor) -> Tensor | None:
        if self.pos is None or self.pos.shape != h.shape[:2]:
            return None  # not a call the base-model hook saw (e.g. a block run on its own)
        if self.fuse and self.decoding:
            key = (layer, self.trace_on)  # kept on the plan: a plan run many times builds each map once
            if key not in self.plan.fused:
                self.plan.fused[key] = _Fused.build(self, layer)
            fused = self.plan.fused[key]
            if fused is not None:
                with torch.no_grad():
                    return fused(h)
        with torch.no_grad():
            work = _Layer(self, layer, h)
            for cc in self._observe.get(layer, []):
                work.observe(cc)
            for e in self._by_layer.get(layer, []):
                pm = self._positions(work, e)
                if bool(pm.any()):
                    work.apply(e, pm)
            out = work.result()
            if self._traced_at.get(layer):
                after = work if out is None else _Layer(self, layer, out)
                for cc in self._traced_at[layer]:
                    self._record(cc.label, layer, after.activation(cc))
        return out

    def _positions(self, work: _Layer, e: PlannedEdit) -> Tensor:
        where = None
        if e.where is not None:
            a = work.read(e.where.concept)
            where = a > e.where.threshold if e.where.op == ">" else a < e.where.threshold
        pm = scope_mask(e.scope, work.pos, where).to(work.h.device)
        if e.condition is not None:
            pm = pm & work.holds(e.condition).to(pm.device)
        if e.active_of is not None:
            pm = pm & (work.read(e.active_of) > e.active_of.threshold(work.layer))
        return pm

    def _record(self, label: str, layer: int, a: Tensor) -> None:
        assert self.pos is not None
        key = (label, layer)
        start, t = self.pos.start, a.shape[1]
        buf = self._buffers.get(key)
        if buf is None:
            buf = torch.zeros(a.shape[0], start + t)
        if buf.shape[1] < start + t:
            buf = torch.cat([buf, torch.zeros(buf.shape[0], start + t - buf.shape[1])], dim=1)
        buf[:, start : start + t] = a.detach().float().cpu()
        self._buffers[key] = buf

    @property
    def trace(self) -> Trace | None:
        """The traced concepts' post-edit activations over every position seen (None: no run)."""
        if self.layout is None:
            return None
        total = max([b.shape[1] for b in self._buffers.values()], default=self.layout.prompt_len)
        pos = self.layout.positions(0, total)
        acts: dict[str, dict[int, Tensor]] = {}
        for (label, layer), buf in self._buffers.items():
            acts.setdefault(label, {})[layer] = buf
        return Trace(acts, pos.kind, pos.patch, list(pos.grid),
                     chains=[(name, [(cc.label, list(layers)) for cc, layers in links]) for name, links, _f in self.plan.chains])


def cached_length(args: tuple, kwargs: dict, length: int) -> int:
    """How many positions the KV cache already holds when the base model is called: 0 at a prefill,
    the absolute position of the call's first token at a decode step.

    Read from what a call carries, never from one keyword's name (transformers 5.24 renamed
    `past_key_values` to `cache`): `cache_position` where a version passes it, else the length
    reported by any argument that is a cache (it has `get_seq_length`). A call that carries neither
    is a prefill or a cache-less step, unless its `position_ids` reach past its own length: then
    it is a decode step whose cache this runtime cannot see, and steering it would edit the wrong
    positions, so it raises. (PaliGemma counts positions from 1, so a whole sequence of `length`
    tokens ends at position `length`: only positions beyond that are a hidden cache's.)
    """
    cp = kwargs.get("cache_position")
    if isinstance(cp, Tensor) and cp.numel():
        return int(cp.reshape(-1)[0])
    caches = [v for v in (*args, *kwargs.values()) if callable(getattr(v, "get_seq_length", None))]
    if caches:
        return int(caches[0].get_seq_length())
    pids = kwargs.get("position_ids")
    if isinstance(pids, Tensor) and pids.numel() and int(pids.max()) > length:
        import transformers

        raise SteerError(
            f"cannot tell a prefill from a decode step: transformers {transformers.__version__} called the model "
            f"with position ids up to {int(pids.max())} for {length} new tokens but passed no cache this runtime "
            "recognises (no cache_position, no argument with get_seq_length); steering would edit the wrong "
            "positions. Install a transformers version steerlang supports (see the README) or report this.")
    return 0


def _compares(c: Cond | None) -> list[CCompare]:
    if c is None:
        return []
    if isinstance(c, CCompare):
        return [c]
    if isinstance(c, CNot):
        return _compares(c.item)
    return [x for i in c.items for x in _compares(i)]

"""Positions: which token of a forward call is image, prompt or output, and the masks of scopes.

Every forward call of a generation (the prefill, then one call per decode step) covers the absolute
positions `[past, past + T)` of each (left-padded) sample. `Layout` records, at prefill, what each
prompt position is (padding/`<s>`, image token with its patch index, prompt text) and the prompt
length P; a later call's positions `>= P` are generated tokens (position P + i holds generated
token i). Without a KV cache, generate re-runs the whole sequence each step: the same rules apply
to every position, so an edit gives the same tokens with and without the cache.

The scope masks are pure functions of a call's `Positions` (and, for `image where`, of a
concept's activations), unit-tested on their own.

A sample's grid is `(rows, cols)` when its image tokens are one row-major grid (LLaVA 1.5), or an
`ImageGrid`: a `(rows, cols)` tuple (the primary view, patches 0 .. rows*cols-1, what a heatmap
shows) that also lists the sample's `View`s — tiles, a global view, a base and a high-resolution
view, several images — each a grid of its own with its place in the image when known, and, where
some image-token positions are not patches (LLaVA-NeXT's row newlines), the patch index of every
position. Region scopes map each view's rows and columns into the image; closing happens per view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from steerlang.errors import InputError
from steerlang.lang import ir

PAD, IMAGE, PROMPT, OUTPUT = 0, 1, 2, 3  # position kinds ("PAD" also covers <s>)
KIND_CODES = {"image": IMAGE, "prompt": PROMPT, "output": OUTPUT}

__all__ = ["IMAGE", "KIND_CODES", "OUTPUT", "PAD", "PROMPT", "ImageGrid", "Layout", "Positions", "View", "close_on_grid",
           "region_mask", "scope_mask", "views_of"]


@dataclass(frozen=True)
class View:
    """One grid of a sample's image patches: patch indices start .. start + rows*cols - 1, row-major.

    `box` is where the view lies in the image, (top, left, bottom, right) as fractions; None when
    the model's inputs do not say (a tile whose place the processor chose)."""

    start: int
    rows: int
    cols: int
    box: tuple[float, float, float, float] | None = (0.0, 0.0, 1.0, 1.0)
    name: str = "image"

    @property
    def size(self) -> int:
        return self.rows * self.cols


class ImageGrid(tuple):
    """`(rows, cols)` of a sample's primary view, with its `views`, optionally the patch index of
    each prompt position (`patch`, [T] long, -1 where an image-token position is not a patch), and
    the family's name for messages."""

    views: tuple[View, ...]
    patch: Tensor | None
    family: str

    def __new__(cls, views: list[View] | tuple[View, ...], patch: Tensor | None = None, family: str = "this model") -> ImageGrid:
        if not views:
            raise ValueError("an ImageGrid needs at least one view")
        self = super().__new__(cls, (views[0].rows, views[0].cols))
        self.views, self.patch, self.family = tuple(views), patch, family
        return self

    def __getnewargs__(self) -> tuple:  # copy/pickle
        return (self.views, self.patch, self.family)


def views_of(grid: tuple[int, int]) -> tuple[View, ...]:
    """A grid's views: an ImageGrid's own, else one view covering the whole image."""
    if isinstance(grid, ImageGrid):
        return grid.views
    return (View(0, int(grid[0]), int(grid[1])),)


@dataclass
class Positions:
    """What each position of one forward call is: all [B, T]."""

    kind: Tensor  # int8 codes PAD / IMAGE / PROMPT / OUTPUT
    patch: Tensor  # long: patch index (row-major) for image tokens, -1 elsewhere
    row: Tensor  # long: patch row for image tokens, -1 elsewhere
    col: Tensor  # long: patch column for image tokens, -1 elsewhere
    out_index: Tensor  # long: generated-token index i for output positions, -1 elsewhere
    grid: list[tuple[int, int]]  # (rows, cols) per sample (an ImageGrid where a sample has views)
    start: int  # absolute position of column 0
    view: Tensor | None = None  # long: index of the image token's view in views_of(grid[b]), -1 elsewhere

    @property
    def shape(self) -> torch.Size:
        return self.kind.shape

    def of(self, *kinds: int) -> Tensor:
        """[B, T] bool: positions of any of these kinds."""
        out = self.kind == kinds[0]
        for k in kinds[1:]:
            out |= self.kind == k
        return out


@dataclass
class Layout:
    """Per-sample layout of the prompt, recorded at prefill and reused by every later step."""

    input_ids: Tensor  # [B, P] the prompt ids (for recognising a cache-less continuation)
    kind: Tensor  # [B, P]
    patch: Tensor  # [B, P]
    grid: list[tuple[int, int]]
    steps: int = 0  # forward calls since the prefill
    rows: Tensor = field(init=False)
    cols: Tensor = field(init=False)
    view: Tensor = field(init=False)

    def __post_init__(self) -> None:
        ncols = torch.tensor([c for _r, c in self.grid], dtype=torch.long)[:, None].expand_as(self.patch)
        is_img = self.patch >= 0
        self.rows = torch.where(is_img, self.patch // ncols.clamp(min=1), -1)
        self.cols = torch.where(is_img, self.patch % ncols.clamp(min=1), -1)
        self.view = torch.where(is_img, 0, -1)
        for b, g in enumerate(self.grid):
            if not isinstance(g, ImageGrid):
                continue
            p = self.patch[b]
            self.rows[b], self.cols[b], self.view[b] = -1, -1, -1
            for i, v in enumerate(g.views):
                sel = (p >= v.start) & (p < v.start + v.size)
                local = p[sel] - v.start
                self.rows[b, sel] = local // max(v.cols, 1)
                self.cols[b, sel] = local % max(v.cols, 1)
                self.view[b, sel] = i

    @property
    def prompt_len(self) -> int:
        return int(self.input_ids.shape[1])

    @classmethod
    def from_prefill(cls, input_ids: Tensor, attention_mask: Tensor | None, image_mask: Tensor,
                     grid_of: Callable[[int], tuple[int, int]], bos_id: int | None) -> Layout:
        """The layout of a prefill call: image tokens by id, `<s>` and padding excluded."""
        kind = torch.full(input_ids.shape, PROMPT, dtype=torch.int8)
        kind[image_mask] = IMAGE
        if bos_id is not None:
            kind[input_ids == bos_id] = PAD
        if attention_mask is not None:
            kind[attention_mask[:, -input_ids.shape[1]:] == 0] = PAD
        patch = torch.where(image_mask, image_mask.long().cumsum(dim=1) - 1, -1)
        grid = [grid_of(i) if bool(image_mask[i].any()) else (0, 0) for i in range(input_ids.shape[0])]
        for i, g in enumerate(grid):
            if isinstance(g, ImageGrid) and g.patch is not None:
                # The adapter numbered the patches itself; image-id positions without a patch
                # (e.g. a row newline) are not image positions.
                p = g.patch.to(patch.device)
                patch[i] = torch.where(image_mask[i] & (p >= 0), p, -1)
                kind[i][image_mask[i] & (p < 0)] = PAD
        return cls(input_ids.clone(), kind, patch, grid)

    def continues(self, input_ids: Tensor, past: int) -> bool:
        """Whether a call with these ids after `past` cached positions continues this generation."""
        batch, t = input_ids.shape
        if batch != self.input_ids.shape[0]:
            return False
        if past > 0:
            return past >= self.prompt_len
        # No cache: the whole sequence again, which must start with the recorded prompt.
        p = self.prompt_len
        return t > p and torch.equal(input_ids[:, :p], self.input_ids)

    def positions(self, start: int, length: int) -> Positions:
        """The positions [start, start + length) of a call."""
        p = self.prompt_len
        batch = self.input_ids.shape[0]
        if start >= p:  # a decode step: output positions only (the common case, kept cheap)
            neg = torch.full((batch, length), -1, dtype=torch.long)
            out_index = torch.arange(start - p, start - p + length).expand(batch, length)
            return Positions(torch.full((batch, length), OUTPUT, dtype=torch.int8), neg, neg, neg, out_index, self.grid, start,
                             neg)
        idx = torch.arange(start, start + length)
        in_prompt = idx < p
        pi = idx.clamp(max=p - 1)
        kind = torch.where(in_prompt, self.kind[:, pi], torch.full((batch, length), OUTPUT, dtype=torch.int8))
        neg = torch.full((batch, length), -1, dtype=torch.long)
        patch = torch.where(in_prompt, self.patch[:, pi], neg)
        row = torch.where(in_prompt, self.rows[:, pi], neg)
        col = torch.where(in_prompt, self.cols[:, pi], neg)
        view = torch.where(in_prompt, self.view[:, pi], neg)
        out_index = torch.where(in_prompt, neg, (idx - p).expand(batch, length))
        return Positions(kind, patch, row, col, out_index, self.grid, start, view)


def region_mask(pos: Positions, region: ir.Region) -> Tensor:
    """[B, T] bool: image tokens with r0*rows <= row < r1*rows and c0*cols <= col < c1*cols.

    On a sample with views, each view's rows and columns are first placed in the image by its box
    (a view covering the whole image gives the rule above); a view whose place is unknown (a tile)
    raises InputError rather than guess."""
    rows = torch.tensor([r for r, _c in pos.grid], dtype=torch.float64)[:, None]
    cols = torch.tensor([c for _r, c in pos.grid], dtype=torch.float64)[:, None]
    r, c = pos.row.double(), pos.col.double()
    inside = (r >= region.row_start * rows) & (r < region.row_end * rows)
    inside &= (c >= region.col_start * cols) & (c < region.col_end * cols)
    for b, g in enumerate(pos.grid):
        if not isinstance(g, ImageGrid):
            continue
        inside[b] = False
        if pos.view is None:
            continue
        for i, v in enumerate(g.views):
            sel = (pos.view[b] == i) & (pos.kind[b] == IMAGE)
            if not bool(sel.any()):
                continue
            if v.box is None:
                raise InputError(f"image regions are not yet supported for {g.family}'s tiled layout: the place of its "
                                 f"{v.name} in the image is not known (use `image` or `image where` instead)")
            top, left, bottom, right = v.box
            # row >= (r0 - top) / (bottom - top) * rows: exactly the rule above for a whole-image view
            rr, cc = r[b], c[b]
            ok = (rr >= (region.row_start - top) / (bottom - top) * v.rows) & (rr < (region.row_end - top) / (bottom - top) * v.rows)
            ok &= (cc >= (region.col_start - left) / (right - left) * v.cols) & (cc < (region.col_end - left) / (right - left) * v.cols)
            inside[b] |= ok & sel
    return inside & (pos.kind == IMAGE)


def scope_mask(scope: ir.Scope, pos: Positions, where: Tensor | None = None) -> Tensor:
    """[B, T] bool: the positions of `scope` in this call.

    `where` is, for an "image_where" scope, the comparison's result at every position ([B, T]
    bool, computed by the caller from the live activations); it is restricted to image tokens.
    """
    kind = scope.kind
    if kind == "all":
        return pos.kind != PAD
    if kind == "image":
        return pos.of(IMAGE)
    if kind == "image_region":
        assert scope.region is not None
        return region_mask(pos, scope.region)
    if kind == "image_where":
        if where is None:
            raise ValueError("an image_where scope needs its comparison's mask")
        return where & pos.of(IMAGE)
    if kind == "prompt":
        return pos.of(PROMPT)
    if kind == "output":
        return pos.of(OUTPUT)
    if kind == "output_tokens":
        assert scope.tokens is not None
        return (pos.kind == OUTPUT) & (pos.out_index >= scope.tokens.start) & (pos.out_index <= scope.tokens.end)
    raise ValueError(f"unknown scope kind {kind!r}")


def close_on_grid(mask: Tensor, pos: Positions, *, dilate_only: bool = False) -> Tensor:
    """[B, T] bool: `steerlang.grid.close` (or, with `dilate_only`, `dilate`) of the image positions
    of `mask` on each sample's patch grid; other positions are returned unchanged."""
    from steerlang.grid import close, dilate

    out = mask.clone()
    img = (pos.kind == IMAGE) & (pos.patch >= 0)
    for b in range(mask.shape[0]):
        if isinstance(pos.grid[b], ImageGrid):
            for v in pos.grid[b].views:  # each view is a grid of its own
                sel = img[b] & (pos.patch[b] >= v.start) & (pos.patch[b] < v.start + v.size)
                if v.rows == 0 or not bool(sel.any()) or not bool(mask[b][sel].any()):
                    continue
                grid = torch.zeros(v.size, dtype=torch.bool, device=mask.device)
                patch = (pos.patch[b][sel] - v.start).to(mask.device)
                grid[patch] = mask[b][sel]
                done = (dilate if dilate_only else close)(grid.view(1, v.rows, v.cols))
                out[b, sel] = done.view(-1)[patch]
            continue
        rows, cols = pos.grid[b]
        sel = img[b]
        if rows == 0 or not bool(sel.any()) or not bool(mask[b][sel].any()):
            continue
        grid = torch.zeros(rows * cols, dtype=torch.bool, device=mask.device)
        patch = pos.patch[b][sel].to(mask.device)
        grid[patch] = mask[b][sel]
        done = (dilate if dilate_only else close)(grid.view(1, rows, cols))
        out[b, sel] = done.view(-1)[patch]
    return out

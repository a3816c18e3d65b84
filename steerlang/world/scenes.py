"""Procedural toy-world scenes: deterministic from (seed, index), with captions and ground truth.

A scene holds 1 to 3 objects of distinct kinds on a 3x3 grid of cells (cell = row * 3 + col),
each drawn with a small jitter. The caption names them in reading order: "a cat and a tree .".
Image 72x72 px and 8 px patches give a 9x9 patch grid aligned with the 3x3 cells (3x3 patches per
cell); an icon is about 20 px and stays inside its cell, so every object covers up to 9 patches and
no patch ever holds two objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from steerlang.errors import InputError
from steerlang.world.icons import DRAW, PALETTES

KINDS: tuple[str, ...] = ("cat", "dog", "bird", "car", "tree", "house", "sun", "fish")
IMAGE_SIZE = 72
PATCH_SIZE = 8
GRID_CELLS = 3
CELL_PX = IMAGE_SIZE // GRID_CELLS
ICON_PX = 20
JITTER_PX = 1.0
BACKGROUND = (236, 236, 232)
COLOUR_JITTER = 14
MAX_OBJECTS = 3


@dataclass(frozen=True)
class WorldObject:
    """One object: its kind, grid cell, pixel centre and colour jitter."""

    kind: str
    cell: int
    cx: float
    cy: float
    tint: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Scene:
    """A scene: objects in reading order, the true caption, and what is shown as the caption."""

    seed: int
    index: int
    objects: tuple[WorldObject, ...]
    shown_caption: str | None = None  # set only for a deliberately mismatched pair
    kinds: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(o.kind for o in self.objects))

    @property
    def caption(self) -> str:
        return caption_for(self.kinds)

    def to_json(self, image_name: str) -> dict:
        rec: dict = {
            "image": image_name,
            "objects": [{"kind": o.kind, "cell": o.cell} for o in self.objects],
            "caption": self.caption,
        }
        if self.shown_caption is not None:
            rec["shown_caption"] = self.shown_caption
        return rec


def caption_for(kinds: Sequence[str]) -> str:
    """The caption of objects in reading order: "a cat and a tree ."."""
    return " and ".join(f"a {k}" for k in kinds) + " ."


def check_kinds(kinds: Sequence[str], argument: str) -> None:
    for k in kinds:
        if k not in KINDS:
            raise InputError(f"{argument}: unknown kind {k!r}; known kinds: {', '.join(KINDS)}")


def make_scene(
    seed: int,
    index: int,
    *,
    with_kinds: Sequence[str] = (),
    without_kinds: Sequence[str] = (),
    objects: int | None = None,
    mismatch_rate: float = 0.0,
) -> Scene:
    """Scene number `index` of the stream `seed`; independent of how many scenes are drawn."""
    rng = np.random.default_rng([seed, index])
    allowed = [k for k in KINDS if k not in without_kinds and k not in with_kinds]
    n = objects if objects is not None else int(rng.integers(1, MAX_OBJECTS + 1))
    n = max(n, len(with_kinds))
    chosen = list(with_kinds) + list(rng.choice(allowed, size=n - len(with_kinds), replace=False))
    cells = sorted(rng.choice(GRID_CELLS * GRID_CELLS, size=n, replace=False).tolist())
    order = rng.permutation(n)
    objs = []
    for cell, j in zip(cells, order, strict=True):
        row, col = divmod(cell, GRID_CELLS)
        cx = (col + 0.5) * CELL_PX + rng.uniform(-JITTER_PX, JITTER_PX)
        cy = (row + 0.5) * CELL_PX + rng.uniform(-JITTER_PX, JITTER_PX)
        tint = tuple(int(t) for t in rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3))
        objs.append(WorldObject(str(chosen[j]), cell, float(cx), float(cy), tint))  # type: ignore[arg-type]
    shown = None
    if mismatch_rate > 0 and rng.random() < mismatch_rate:
        shown = _mismatched_caption([o.kind for o in objs], rng)
    return Scene(seed, index, tuple(objs), shown)


def _mismatched_caption(kinds: list[str], rng: np.random.Generator) -> str:
    # Swap one object's kind for a kind absent from the scene: a caption that disagrees with its image.
    absent = [k for k in KINDS if k not in kinds]
    wrong = list(kinds)
    wrong[int(rng.integers(len(wrong)))] = str(rng.choice(absent))
    return caption_for(wrong)


def make_scenes(
    seed: int,
    count: int,
    *,
    with_kinds: Sequence[str] = (),
    without_kinds: Sequence[str] = (),
    objects: int | None = None,
    mismatch_rate: float = 0.0,
) -> list[Scene]:
    """`count` scenes of the stream `seed`, validating the options first."""
    if count <= 0:
        raise InputError(f"--count: must be at least 1, got {count}")
    check_kinds(with_kinds, "--with")
    check_kinds(without_kinds, "--without")
    both = set(with_kinds) & set(without_kinds)
    if both:
        raise InputError(f"--with/--without: kind {sorted(both)[0]!r} is both required and forbidden")
    if len(set(with_kinds)) != len(with_kinds):
        raise InputError("--with: each kind may be named once (objects in a scene are of distinct kinds)")
    if objects is not None and not 1 <= objects <= MAX_OBJECTS:
        raise InputError(f"--objects: must be between 1 and {MAX_OBJECTS}, got {objects}")
    if objects is not None and objects < len(with_kinds):
        raise InputError(f"--objects: {objects} is fewer than the {len(with_kinds)} kinds required by --with")
    if len(with_kinds) > MAX_OBJECTS:
        raise InputError(f"--with: at most {MAX_OBJECTS} kinds fit in a scene")
    free = len(KINDS) - len(set(with_kinds) | set(without_kinds))
    if free < (objects or 1) - len(with_kinds):
        raise InputError("--without: too many kinds forbidden to fill the scenes")
    if not 0.0 <= mismatch_rate <= 1.0:
        raise InputError(f"--mismatch-rate: must be within [0, 1], got {mismatch_rate}")
    return [
        make_scene(seed, i, with_kinds=with_kinds, without_kinds=without_kinds, objects=objects, mismatch_rate=mismatch_rate)
        for i in range(count)
    ]


def _tinted(rgb: tuple[int, int, int], tint: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(rgb, tint, strict=True))  # type: ignore[return-value]


def render(scene: Scene) -> Image.Image:
    """The scene as a 72x72 RGB image."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        palette = PALETTES[obj.kind]

        def paint(part: str, palette: dict = palette, tint: tuple = obj.tint) -> tuple[int, int, int]:
            return _tinted(palette[part], tint) if part == "main" else palette[part]

        DRAW[obj.kind](draw, obj.cx, obj.cy, ICON_PX, paint)
    return img


def blank_image() -> Image.Image:
    """An empty scene: what the model sees where there is no object."""
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)


def object_masks(scene: Scene) -> np.ndarray:
    """Visible pixels of each object, [n_objects, H, W] bool (later objects drawn on top)."""
    masks = np.zeros((len(scene.objects), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i, obj in enumerate(scene.objects):
        m = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
        DRAW[obj.kind](ImageDraw.Draw(m), obj.cx, obj.cy, ICON_PX, lambda _part: 255)
        masks[i] = np.asarray(m) > 0
        masks[:i] &= ~masks[i]
    return masks


def patch_pixel_counts(scene: Scene) -> np.ndarray:
    """Object pixels per patch, [n_objects, rows * cols] int (ground truth for concept masks)."""
    masks = object_masks(scene)
    g = IMAGE_SIZE // PATCH_SIZE
    counts = masks.reshape(len(masks), g, PATCH_SIZE, g, PATCH_SIZE).sum(axis=(2, 4))
    return counts.reshape(len(masks), g * g)

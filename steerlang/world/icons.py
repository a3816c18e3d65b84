"""Icons of the toy world: one drawing function per object kind.

Every kind has its own colour family and silhouette, so that a patch of a cat and a patch of a dog
differ in both (the concepts learned later must tell kinds apart patch by patch). A drawing
function takes the centre, the icon size and a `paint(part)` callable, so the same code draws the
coloured icon and its ground-truth mask (paint returns 255 for every part).
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import ImageDraw

Paint = Callable[[str], "int | tuple[int, int, int]"]

# Base RGB colour of each part; instances jitter the "main" part a little, never across kinds.
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "cat": {"main": (240, 140, 30), "ear": (200, 90, 20), "eye": (30, 90, 30)},
    "dog": {"main": (150, 150, 160), "ear": (70, 50, 40), "snout": (210, 210, 215), "eye": (20, 20, 20)},
    "bird": {"main": (40, 90, 220), "wing": (20, 40, 130), "beak": (250, 170, 0)},
    "car": {"main": (215, 25, 35), "window": (170, 220, 250), "wheel": (25, 25, 25)},
    "tree": {"main": (30, 150, 50), "trunk": (120, 80, 30)},
    "house": {"main": (225, 205, 150), "roof": (120, 40, 150), "door": (80, 50, 30)},
    "sun": {"main": (250, 215, 30)},
    "fish": {"main": (20, 180, 170), "tail": (10, 120, 120), "eye": (255, 255, 255)},
}


def _cat(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    r = 0.36 * s
    d.polygon([(x - r, y - 0.1 * s), (x - 0.85 * r, y - r - 0.1 * s), (x - 0.15 * r, y - 0.85 * r)], fill=paint("ear"))
    d.polygon([(x + r, y - 0.1 * s), (x + 0.85 * r, y - r - 0.1 * s), (x + 0.15 * r, y - 0.85 * r)], fill=paint("ear"))
    d.ellipse([x - r, y - r + 0.08 * s, x + r, y + r + 0.08 * s], fill=paint("main"))
    for ex in (x - 0.35 * r, x + 0.35 * r):
        d.ellipse([ex - 0.06 * s, y - 0.04 * s, ex + 0.06 * s, y + 0.08 * s], fill=paint("eye"))


def _dog(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    w = 0.3 * s
    d.rounded_rectangle([x - w, y - 0.38 * s, x + w, y + 0.3 * s], radius=0.12 * s, fill=paint("main"))
    d.ellipse([x - w - 0.16 * s, y - 0.36 * s, x - w + 0.08 * s, y + 0.22 * s], fill=paint("ear"))
    d.ellipse([x + w - 0.08 * s, y - 0.36 * s, x + w + 0.16 * s, y + 0.22 * s], fill=paint("ear"))
    d.ellipse([x - 0.18 * s, y + 0.02 * s, x + 0.18 * s, y + 0.4 * s], fill=paint("snout"))
    d.ellipse([x - 0.07 * s, y + 0.06 * s, x + 0.07 * s, y + 0.17 * s], fill=paint("eye"))


def _bird(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    d.polygon([(x - 0.5 * s, y - 0.25 * s), (x - 0.25 * s, y), (x - 0.5 * s, y + 0.15 * s)], fill=paint("wing"))
    d.ellipse([x - 0.35 * s, y - 0.22 * s, x + 0.3 * s, y + 0.25 * s], fill=paint("main"))
    d.polygon([(x + 0.26 * s, y - 0.1 * s), (x + 0.5 * s, y), (x + 0.26 * s, y + 0.08 * s)], fill=paint("beak"))
    d.polygon([(x - 0.15 * s, y - 0.02 * s), (x + 0.1 * s, y - 0.02 * s), (x - 0.05 * s, y - 0.35 * s)], fill=paint("wing"))


def _car(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    d.rectangle([x - 0.5 * s, y - 0.08 * s, x + 0.5 * s, y + 0.22 * s], fill=paint("main"))
    d.polygon([(x - 0.3 * s, y - 0.08 * s), (x - 0.18 * s, y - 0.32 * s), (x + 0.2 * s, y - 0.32 * s), (x + 0.32 * s, y - 0.08 * s)], fill=paint("main"))
    d.rectangle([x - 0.15 * s, y - 0.27 * s, x + 0.17 * s, y - 0.1 * s], fill=paint("window"))
    for wx in (x - 0.28 * s, x + 0.28 * s):
        d.ellipse([wx - 0.13 * s, y + 0.12 * s, wx + 0.13 * s, y + 0.38 * s], fill=paint("wheel"))


def _tree(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    d.rectangle([x - 0.08 * s, y + 0.05 * s, x + 0.08 * s, y + 0.5 * s], fill=paint("trunk"))
    d.polygon([(x, y - 0.5 * s), (x - 0.38 * s, y + 0.18 * s), (x + 0.38 * s, y + 0.18 * s)], fill=paint("main"))


def _house(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    d.rectangle([x - 0.36 * s, y - 0.05 * s, x + 0.36 * s, y + 0.45 * s], fill=paint("main"))
    d.polygon([(x - 0.48 * s, y - 0.05 * s), (x, y - 0.48 * s), (x + 0.48 * s, y - 0.05 * s)], fill=paint("roof"))
    d.rectangle([x - 0.08 * s, y + 0.18 * s, x + 0.08 * s, y + 0.45 * s], fill=paint("door"))


def _sun(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    for i in range(8):
        # Rays as thin diamonds on the 8 compass directions.
        dx, dy = [(1, 0), (0.7, 0.7), (0, 1), (-0.7, 0.7), (-1, 0), (-0.7, -0.7), (0, -1), (0.7, -0.7)][i]
        px, py = -dy, dx
        d.polygon([
            (x + 0.22 * s * dx + 0.05 * s * px, y + 0.22 * s * dy + 0.05 * s * py),
            (x + 0.5 * s * dx, y + 0.5 * s * dy),
            (x + 0.22 * s * dx - 0.05 * s * px, y + 0.22 * s * dy - 0.05 * s * py),
        ], fill=paint("main"))
    d.ellipse([x - 0.27 * s, y - 0.27 * s, x + 0.27 * s, y + 0.27 * s], fill=paint("main"))


def _fish(d: ImageDraw.ImageDraw, x: float, y: float, s: float, paint: Paint) -> None:
    d.polygon([(x - 0.2 * s, y), (x - 0.5 * s, y - 0.25 * s), (x - 0.5 * s, y + 0.25 * s)], fill=paint("tail"))
    d.ellipse([x - 0.32 * s, y - 0.22 * s, x + 0.45 * s, y + 0.22 * s], fill=paint("main"))
    d.ellipse([x + 0.18 * s, y - 0.1 * s, x + 0.28 * s, y], fill=paint("eye"))


DRAW: dict[str, Callable[[ImageDraw.ImageDraw, float, float, float, Paint], None]] = {
    "cat": _cat, "dog": _dog, "bird": _bird, "car": _car,
    "tree": _tree, "house": _house, "sun": _sun, "fish": _fish,
}

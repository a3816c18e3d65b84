"""The toy world as a dataset: scenes drawn on the fly from (seed, index), one sample per scene.

This is the only module of `steerlang.data` that uses `steerlang.world`, and it imports it inside
functions, so that reading a corpus never loads the toy world.

Each sample's text is the caption a corpus would hold: the scene's caption, or, for a pair made
deliberately wrong (`mismatch_rate`), the mismatched caption. What the generator knows is attached
for measuring only: `Sample.truth` (kinds, cells, the true caption, whether the pair is
mismatched) and `Sample.regions` (each object's kind and grid-cell box). Neither is in an exported
corpus's metadata.jsonl (it goes to truth.jsonl beside it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from steerlang.data.report import BadRow
from steerlang.data.sample import Dataset, Region, Sample
from steerlang.errors import InputError

TOY_PREFIX = "toyworld"


def parse_toy_spec(spec: str) -> tuple[int, int] | None:
    """(seed, count) of "toyworld:SEED:COUNT"; None when `spec` does not start with "toyworld:"."""
    if not spec.startswith(TOY_PREFIX + ":"):
        return None
    parts = spec.split(":")
    try:
        _, seed, count = parts
        return int(seed), int(count)
    except ValueError:
        raise InputError(f"DIR: {spec!r}: write the toy source as toyworld:SEED:COUNT, e.g. toyworld:7:200") from None


class ToyWorldSource(Dataset):
    """`count` scenes of the toy-world stream `seed`, rendered as each sample is produced."""

    kind = "toyworld"

    def __init__(
        self,
        seed: int,
        count: int,
        *,
        mismatch_rate: float = 0.0,
        with_kinds: Sequence[str] = (),
        without_kinds: Sequence[str] = (),
        objects: int | None = None,
        max_examples: int = 5,
    ) -> None:
        from steerlang.world.scenes import make_scenes

        if count <= 0:
            raise InputError(f"--count: must be at least 1, got {count}")
        # Checks the options (kinds, objects, rate) the way `steer world scenes` does, on one scene.
        make_scenes(seed, 1, with_kinds=with_kinds, without_kinds=without_kinds, objects=objects,
                    mismatch_rate=mismatch_rate)
        super().__init__(f"{TOY_PREFIX}:{seed}:{count}", max_examples=max_examples)
        self.seed, self.count = seed, count
        self.options = {"with_kinds": tuple(with_kinds), "without_kinds": tuple(without_kinds), "objects": objects,
                        "mismatch_rate": mismatch_rate}
        self.width = max(4, len(str(count - 1)))

    @property
    def columns(self) -> tuple[str, ...]:
        return ("file_name", "text")

    def count_rows(self) -> int:
        return self.count

    def file_name(self, index: int) -> str:
        """The image file name of scene `index` (as `steer world scenes` names it): "0007.png"."""
        return f"{index:0{self.width}d}.png"

    def _items(self, rank: int, world: int) -> Iterator[Sample | BadRow]:
        from steerlang.world.scenes import CELL_PX, GRID_CELLS, make_scene, render

        for i in range(rank, self.count, world):
            scene = make_scene(self.seed, i, **self.options)
            regions = []
            for o in scene.objects:
                r, c = divmod(o.cell, GRID_CELLS)
                regions.append(Region(o.kind, (c * CELL_PX, r * CELL_PX, (c + 1) * CELL_PX, (r + 1) * CELL_PX)))
            truth = {
                "caption": scene.caption,
                "objects": [{"kind": o.kind, "cell": o.cell} for o in scene.objects],
                "mismatched": scene.shown_caption is not None,
                "seed": self.seed,
                "index": i,
            }
            yield Sample(row=i, name=self.file_name(i), text=scene.shown_caption or scene.caption, image=render(scene),
                         regions=tuple(regions), truth=truth)

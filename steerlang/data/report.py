"""What a pass over a dataset found: good samples, and bad rows by reason with their place in the file.

A bad row is skipped and counted (never fatal unless the dataset was opened with ``strict=True``).
Each carries where it came from: the metadata file (or dataset folder), the 1-based line number
where the source has lines, the 0-based row index, and the image file name when the row named one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Reasons a row is skipped, in the order reports list them.
MALFORMED_ROW = "malformed_row"  # a line that is not a JSON object, a CSV record that cannot be parsed
MISSING_COLUMN = "missing_column"  # the row lacks the file name, caption (or chosen prompt) column
EMPTY_CAPTION = "empty_caption"  # the caption is null, empty or only spaces
CAPTION_NOT_TEXT = "caption_not_text"  # the caption is a number, a list, an object...
BAD_FILE_NAME = "bad_file_name"  # absolute, or leaves the corpus folder ("../x.png"), or not a string
MISSING_IMAGE = "missing_image"  # the image file does not exist (or the row holds no image)
UNREADABLE_IMAGE = "unreadable_image"  # the file (or stored bytes) is not an image PIL can decode

REASONS: tuple[str, ...] = (MALFORMED_ROW, MISSING_COLUMN, EMPTY_CAPTION, CAPTION_NOT_TEXT, BAD_FILE_NAME,
                            MISSING_IMAGE, UNREADABLE_IMAGE)


@dataclass(frozen=True)
class BadRow:
    """One skipped row: why, where (file, 1-based line if any, 0-based row), and which image it named."""

    reason: str
    file: str
    row: int
    detail: str
    line: int | None = None
    name: str | None = None

    def where(self) -> str:
        """"corpus/metadata.jsonl:4" (line-based sources) or "corpus (row 3)"."""
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file} (row {self.row})"

    def message(self) -> str:
        image = f" [{self.name}]" if self.name else ""
        return f"{self.where()}: {self.reason.replace('_', ' ')}{image}: {self.detail}"

    def to_json(self) -> dict:
        return {"reason": self.reason, "file": self.file, "line": self.line, "row": self.row, "name": self.name,
                "detail": self.detail}


@dataclass
class DataReport:
    """Counts of one pass (one shard) over a dataset; `complete` once the pass reached the end."""

    source: str
    kind: str
    shard: tuple[int, int] = (0, 1)
    good: int = 0
    bad: Counter = field(default_factory=Counter)
    examples: dict[str, list[BadRow]] = field(default_factory=dict)
    max_examples: int = 5
    complete: bool = False

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    @property
    def rows(self) -> int:
        """Rows seen in this pass: good samples plus bad rows."""
        return self.good + self.n_bad

    def add_bad(self, bad: BadRow) -> None:
        self.bad[bad.reason] += 1
        kept = self.examples.setdefault(bad.reason, [])
        if len(kept) < self.max_examples:
            kept.append(bad)

    def bad_by_reason(self) -> list[tuple[str, int]]:
        """(reason, count) for every reason seen, in the fixed order of `REASONS`."""
        order = {r: i for i, r in enumerate(REASONS)}
        return sorted(((r, n) for r, n in self.bad.items() if n), key=lambda rn: (order.get(rn[0], len(order)), rn[0]))

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "shard": list(self.shard),
            "complete": self.complete,
            "rows": self.rows,
            "samples": self.good,
            "bad_rows": self.n_bad,
            "bad": dict(self.bad_by_reason()),
            "examples": {r: [b.to_json() for b in self.examples.get(r, [])] for r, _ in self.bad_by_reason()},
        }

    def summary(self) -> list[str]:
        """Lines for people: the counts, then each reason with its first few rows."""
        shard = f" (shard {self.shard[0]} of {self.shard[1]})" if self.shard[1] > 1 else ""
        state = "" if self.complete else " (pass not finished)"
        lines = [f"{self.source}{shard}: {self.good} samples, {self.n_bad} bad rows{state}"]
        for reason, n in self.bad_by_reason():
            lines.append(f"  {reason}: {n}")
            lines.extend(f"    {b.message()}" for b in self.examples.get(reason, []))
            more = n - len(self.examples.get(reason, []))
            if more > 0:
                lines.append(f"    ... and {more} more")
        return lines

"""Where every benchmark script puts its result: JSON on stdout and in --out, markdown in --md."""

from __future__ import annotations

import json
from pathlib import Path


def save_report(report: dict, out: Path | None, md: Path | None, md_text: str | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    for path, body in ((out, text + "\n"), (md, md_text)):
        if path is not None and body is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)

"""The language front end never loads torch (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lang_support import GOLDEN

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_import_does_not_load_torch() -> None:
    _run("import steerlang.lang, sys; assert 'torch' not in sys.modules")


def test_parse_check_compile_format_do_not_load_torch() -> None:
    program = GOLDEN / "valid" / "imports.stl"
    _run(
        "import sys\n"
        "from pathlib import Path\n"
        "import steerlang.lang as lang\n"
        f"path = Path({str(program)!r})\n"
        "text = path.read_text()\n"
        "table = lang.FakeConceptTable()\n"
        "prog = lang.check(lang.parse(text, str(path)), table)\n"
        "prog = lang.compile_program(path, table)\n"
        "lang.ir.Program.model_validate_json(prog.model_dump_json())\n"
        "lang.format_program(text)\n"
        "try:\n"
        "    lang.compile_program('steer image { off kat }', table)\n"
        "except lang.LangError as exc:\n"
        "    exc.render()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )

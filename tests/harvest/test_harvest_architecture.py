"""The harvester stands apart from the toy world: importing it (and the dictionary API that uses it)
loads nothing of steerlang.world; only toy_harvest.py, loaded on demand, imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import steerlang.dictionary

DICT = Path(steerlang.dictionary.__file__).parent


def _loaded_world_modules(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(sorted(m for m in sys.modules if m.startswith('steerlang.world'))))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return [m for m in res.stdout.strip().split(",") if m]


def test_importing_the_harvester_does_not_import_the_world() -> None:
    assert _loaded_world_modules("import steerlang.dictionary.harvest") == []
    assert _loaded_world_modules("import steerlang.dictionary.api") == []
    # the toy world's own helpers are still there, loaded when asked for
    assert _loaded_world_modules("from steerlang.dictionary.harvest import scene_batch") != []


def test_harvest_py_imports_the_world_only_inside_functions() -> None:
    tree = ast.parse((DICT / "harvest.py").read_text())
    for node in tree.body:  # module level only
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n.startswith("steerlang.world") or n.endswith("toy_harvest") for n in names), ast.dump(node)

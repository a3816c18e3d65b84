"""steerlang.data stands apart from the toy world: only data/toy.py uses steerlang.world, lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import steerlang.data

DATA = Path(steerlang.data.__file__).parent


def _world_imports(tree: ast.AST) -> list[ast.stmt]:
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if any(n == "steerlang.world" or n.startswith("steerlang.world.") for n in names):
            found.append(node)
    return found


def test_only_the_toy_module_imports_the_world_and_only_inside_functions() -> None:
    files = sorted(DATA.rglob("*.py"))
    assert DATA / "toy.py" in files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        uses = _world_imports(tree)
        if path.name != "toy.py":
            assert uses == [], f"{path.name} imports steerlang.world"
            continue
        assert uses, "toy.py should wrap steerlang.world"
        top_level = [n for n in tree.body if n in uses]
        assert top_level == [], "toy.py must import steerlang.world inside functions"


def test_reading_a_corpus_never_loads_the_world(tmp_path) -> None:
    code = f"""
import sys
from PIL import Image
from pathlib import Path
root = Path({str(tmp_path)!r})
Image.new("RGB", (4, 4)).save(root / "a.png")
(root / "metadata.jsonl").write_text('{{"file_name": "a.png", "text": "t"}}\\n')
import steerlang.data
from steerlang.data import open_dataset
assert [s.text for s in open_dataset(root)] == ["t"]
assert "steerlang.data.toy" not in sys.modules
loaded = sorted(m for m in sys.modules if m.startswith("steerlang.world") or m in ("torch", "transformers"))
print(loaded)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"

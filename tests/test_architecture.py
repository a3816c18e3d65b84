"""The toy world is a plug-in: `steerlang.dictionary` and `steerlang.runtime` import nothing of
`steerlang.world`, at import time or inside functions, except the toy entry points listed here
(a toy harvest, the supervised oracle build, the toy spliced-loss evaluation), each loading it when
a user asks for the toy world by name."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import steerlang

ROOT = Path(steerlang.__file__).parent
PACKAGES = ("dictionary", "runtime")

# (module, function) pairs allowed to import steerlang.world lazily: toy-world entry points only.
TOY_ENTRY_POINTS = {
    ("steerlang/dictionary/harvest.py", "__getattr__"),
    ("steerlang/dictionary/harvest.py", "harvest"),
    ("steerlang/dictionary/api.py", "build_concepts"),
    ("steerlang/dictionary/splice.py", "spliced_loss"),
}


def _world_imports(path: Path) -> list[tuple[str, str | None]]:
    """(imported module, enclosing top-level function or None) for every import of steerlang.world."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            f = func
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is None:
                f = child.name
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            if any(n == "steerlang.world" or n.startswith("steerlang.world.") for n in names) or (
                isinstance(child, ast.ImportFrom) and child.module == "steerlang" and any(a.name == "world" for a in child.names)
            ):
                found.append((names[0], f))
            visit(child, f)

    visit(tree, None)
    return found


def test_no_module_of_dictionary_or_runtime_imports_the_world_outside_toy_entry_points() -> None:
    seen = set()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT.parent).as_posix()
            for module, func in _world_imports(path):
                assert func is not None, f"{rel} imports {module} at module level"
                assert (rel, func) in TOY_ENTRY_POINTS, f"{rel}:{func}() imports {module}; the toy world is a plug-in"
                seen.add((rel, func))
    assert seen == TOY_ENTRY_POINTS  # an entry point that no longer imports the world leaves this list


def test_importing_every_dictionary_and_runtime_module_loads_no_world() -> None:
    mods = []
    for pkg in PACKAGES:
        mods += [f"steerlang.{pkg}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / pkg)])]
    code = ("import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)
            + "print(','.join(sorted(m for m in sys.modules if m.startswith('steerlang.world'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", res.stdout

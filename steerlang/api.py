"""The Python API: what the CLI (`steer run`, `steer test`) and the REPL are thin over.

    import steerlang
    s = steerlang.load_session("toyworld", "toyworld")     # model and dictionaries, once
    prog = s.compile('let cat = concept "cat"\\nsteer image where cat > 0.3 { off cat }')
    [r] = s.run(prog, images=["scene.png"], compare=True)
    print(r.output, r.baseline, [e.passed for e in r.expectations])

    with s.steer(prog):                                     # your own generation code
        s.model.generate(**s.bundle.encode(images, prompts), max_new_tokens=16)

Programs can also be built in Python (`steerlang.lang.ir`), without the language.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from steerlang.dictionary.concepts import ConceptSet, load_concept_set
from steerlang.errors import InputError
from steerlang.lang import compile_program, ir
from steerlang.runtime.session import DEFAULT_TOKENS, ExpectationResult, RunResult, Session, load_image
from steerlang.runtime.trace import Trace, write_trace
from steerlang.world.model import ModelBundle, load_model

__all__ = [
    "DEFAULT_TOKENS",
    "ExpectationResult",
    "RunResult",
    "Session",
    "Trace",
    "find_programs",
    "load_image",
    "load_session",
    "read_header",
    "write_trace",
]


def load_session(model: str | os.PathLike | ModelBundle = "toyworld", dictionary: str | os.PathLike | ConceptSet = "toyworld",
                 *, device: str = "cpu", dense: bool = False) -> Session:
    """Load a model (name, folder or bundle) and a concept set (name, folder or loaded) once.

    `dense=True` makes every edit compute the full SAE encode (for benchmarking the sparse path).
    """
    bundle = model if isinstance(model, ModelBundle) else load_model(model, device=device)
    concepts = dictionary if isinstance(dictionary, ConceptSet) else load_concept_set(dictionary)
    return Session(bundle, concepts, dense=dense)


def read_header(path: str | os.PathLike) -> ir.Program:
    """Parse and check a program without a dictionary (for its header: model, dictionary, image).

    Raises `LangError` on a syntax error, before any model is loaded."""
    return compile_program(Path(path), None)


def find_programs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The `.stl` files named, or found (recursively, sorted) in the folders named."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob("*.stl"))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return out

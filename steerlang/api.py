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
from steerlang.errors import InputError, SteerError
from steerlang.lang import (
    LangError,
    ast,
    compile_program,
    ir,
    load_concept_table,
    parse,
    read_program,
    require_content,
)
from steerlang.lang import check as check_ast
from steerlang.lang.concepts import ConceptTable, HeaderOverride
from steerlang.lang.describe import describe_program
from steerlang.lang.errors import Diagnostic
from steerlang.models.bundle import ModelBundle, load_model
from steerlang.runtime.session import (
    DEFAULT_TOKENS,
    ExpectationResult,
    RunResult,
    Session,
    load_image,
    no_image_error,
)
from steerlang.runtime.trace import Trace, write_trace

__all__ = [
    "DEFAULT_DICTIONARY",
    "DEFAULT_MODEL",
    "DEFAULT_TOKENS",
    "ExpectationResult",
    "RunResult",
    "Session",
    "Trace",
    "check_program",
    "describe_program",
    "dictionary_for",
    "find_programs",
    "load_image",
    "load_session",
    "model_for",
    "no_image_error",
    "program_images",
    "read_header",
    "require_content",
    "write_trace",
]

DEFAULT_MODEL = "toyworld"
DEFAULT_DICTIONARY = "toyworld"


def load_session(model: str | os.PathLike | ModelBundle = "toyworld", dictionary: str | os.PathLike | ConceptSet = "toyworld",
                 *, device: str = "cpu", dense: bool = False, dtype: str | None = None,
                 device_map: str | None = None) -> Session:
    """Load a model (name, folder or bundle) and a concept set (name, folder or loaded) once; a
    folder of raw SAE files (SAELens, sparsify, dictionary_learning, Gemma Scope) is a concept set
    whose latents programs name `image#N` / `text#N`.

    `dense=True` makes every edit compute the full SAE encode (for benchmarking the sparse path).
    `dtype` ("float32", "bfloat16", "auto", ...) and `device_map` ("auto", ...) pass through to the
    model loader (accelerate places or offloads the blocks; hooks follow the modules).
    """
    # The concept set first: it is quick to load and a wrong folder is reported before the model loads.
    concepts = dictionary if isinstance(dictionary, ConceptSet) else load_concept_set(dictionary)
    bundle = model if isinstance(model, ModelBundle) else load_model(model, device=device, dtype=dtype, device_map=device_map)
    return Session(bundle, concepts, dense=dense)


def read_header(path: str | os.PathLike) -> ir.Program:
    """Parse and check a program without a dictionary (for its header: model, dictionary, image).

    Raises `LangError` on a syntax error, before any model is loaded."""
    return compile_program(Path(path), None)


def model_for(program: ir.Program, model: str | None = None) -> str:
    """The model a program runs on: `model` if given (--model), else its `model` header, else toyworld."""
    return model or program.header.model or DEFAULT_MODEL


def dictionary_for(program: ir.Program, dictionary: str | None = None) -> str:
    """The concept set a program runs with: `dictionary` if given (--dictionary), else its
    `dictionary` header, else toyworld. `steer run`, `steer test` and `steer check` all use this."""
    return dictionary or program.header.dictionary or DEFAULT_DICTIONARY


def check_program(path: str | os.PathLike, dictionary: str | None = None, *,
                  tables: dict[str, ConceptTable] | None = None) -> ir.Program:
    """What `steer check` does: parse the program and resolve its concept names and layers against
    the concept set it would run with (`dictionary_for`), without loading the model.

    `dictionary` may also be a JSON concept list. `tables` caches loaded concept sets by name across
    calls. Raises `LangError` (located, with a hint) for every problem in the program, an empty
    program included, and `SteerError` when a `--dictionary` given here cannot be loaded.
    """
    path = Path(path)
    text = read_program(path)
    program = parse(text, str(path))
    header = {s.key: s for s in program.statements if isinstance(s, ast.Header)}
    named = header.get("dictionary")
    spec = dictionary or (named.value.value if named is not None and named.value.value.strip() else None) or DEFAULT_DICTIONARY
    tables = {} if tables is None else tables
    if spec not in tables:
        try:
            tables[spec] = load_concept_table(spec)
        except SteerError as exc:
            if dictionary is not None or named is None:
                raise
            # The program's own `dictionary` line names it: point there.
            raise LangError([Diagnostic(named.value.span, f"cannot load the dictionary: {exc}",
                                        "give a concept-set folder (or \"toyworld\") here, or check with --dictionary")],
                            {str(path): text}) from None
    # --dictionary replaces the set the program's header names (the header is not checked against it).
    result = check_ast(program, HeaderOverride(tables[spec]) if dictionary is not None else tables[spec])
    require_content(result)
    return result


def program_images(program: ir.Program, images: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """The images to run a program on: `images` if any, else its `image` header (relative to its
    file). Each is opened once, so a missing, corrupt or folder path is an `InputError` before any
    model is loaded; no image at all is one too, naming the line where `image "PATH"` would go."""
    paths = [Path(p) for p in images or ()]
    if not paths:
        if program.header.image is None:
            raise no_image_error(program.source)
        base = Path(program.source).parent if program.source and not program.source.startswith("<") else Path()
        paths = [base / program.header.image]
    for p in paths:
        load_image(p)
    return paths


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

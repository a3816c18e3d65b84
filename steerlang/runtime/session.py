"""A session: a model and a concept set loaded once; programs compiled, checked and run on it.

    s = Session(load_model("toyworld"), load_concept_set("toyworld"))
    prog = s.compile(Path("programs/remove_cat.stl"))
    [r] = s.run(prog, compare=True)
    r.output, r.baseline, r.expectations

    with s.steer(prog):                       # the user's own generation code
        s.model.generate(**inputs)

Everything that can be wrong with the input (image files, header, concepts, layers) is checked
before the model runs.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from steerlang.dictionary.concepts import ConceptSet
from steerlang.errors import InputError, SteerWarning
from steerlang.lang import compile_program, header_end_line, ir
from steerlang.lang.concepts import HeaderOverride
from steerlang.models.bundle import ModelBundle
from steerlang.runtime.adapters import ModelAdapter, adapter_for
from steerlang.runtime.hooks import Steerer
from steerlang.runtime.plan import HookPlan, compile_plan, concept_label
from steerlang.runtime.trace import Trace

DEFAULT_TOKENS = 24

__all__ = ["DEFAULT_TOKENS", "ExpectationResult", "RunResult", "Session", "load_image", "no_image_error"]


@dataclass
class ExpectationResult:
    """One `expect` line and whether the steered run met it (`detail` says what was seen)."""

    text: str
    passed: bool
    detail: str = ""


@dataclass
class RunResult:
    """The steered run on one image: output, baseline (when compared), expectations, trace."""

    image: str | None
    prompt: str
    output: str
    baseline: str | None = None
    expectations: list[ExpectationResult] = field(default_factory=list)
    trace: Trace | None = None
    sample: int = 0  # this result's row in `trace`

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.expectations)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "output": self.output, "baseline": self.baseline,
                "expectations": [{"text": e.text, "passed": e.passed} for e in self.expectations]}


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(path: str | Path) -> Image.Image:
    """An RGB image from a file; InputError if it is missing or not an image."""
    p = Path(path)
    if p.is_dir():
        pics = sorted(x for x in p.iterdir() if x.suffix.lower() in _IMAGE_SUFFIXES)
        held = f" holding {len(pics)} image{'s' if len(pics) != 1 else ''}" if pics else ""
        raise InputError(f"image {p} is a folder{held}, not an image file: give image files, one --image per file "
                         f"(e.g. --image {pics[0] if pics else p / 'IMAGE.png'})")
    if not p.is_file():
        raise InputError(f"image {p} not found")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image {p} cannot be read: {exc}") from None


def no_image_error(source: str | None) -> InputError:
    """The error for a program run without an image: names the file and the line where an
    `image "PATH"` line would go (just after the header)."""
    text = None
    if source and not source.startswith("<"):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    if text is None:
        return InputError(f"{source or 'program'}: no image: give one (--image PATH) or write `image \"PATH\"` in the program")
    line = header_end_line(text, source or "<string>")
    return InputError(f'{source}:{line}:1: no image: write `image "PATH"` (relative to the program\'s folder) at line '
                      f"{line}, after the header, or give --image PATH")


def _header_place(program: ir.Program, keyword: str) -> str:
    """`file:line: ` of a header statement when the program came from a readable file."""
    if not program.source:
        return ""
    try:
        lines = Path(program.source).read_text(encoding="utf-8").splitlines()
    except OSError:
        return f"{program.source}: "
    for i, line in enumerate(lines, 1):
        if re.match(rf"\s*{keyword}\b", line):
            return f"{program.source}:{i}: "
    return f"{program.source}: "


def _phrase(e: ir.Expectation) -> str:
    if isinstance(e, ir.ExpectText):
        return f'output {"has" if e.has else "lacks"} "{e.text}"'
    c = e.condition
    return f"{concept_label(c.concept)} {c.op} {c.threshold:g} in {c.modality or 'image'}"


def has_word(text: str, word: str) -> bool:
    """Whole-word (case-insensitive) occurrence of `word` in `text`."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None


class Session:
    """A model bundle and a concept set, loaded once, with everything needed to run programs."""

    def __init__(self, bundle: ModelBundle, concepts: ConceptSet, *, dense: bool = False) -> None:
        self.bundle, self.concepts, self.dense = bundle, concepts, dense
        # Set when the concept set was chosen over the programs' own `dictionary` headers
        # (`--dictionary`): programs then run with it whatever set their header names.
        self.dictionary_override = False
        self.adapter: ModelAdapter = adapter_for(bundle.model)
        self.adapter.processor = bundle.processor
        self.adapter.tokenizer = bundle.tokenizer if bundle.processor is not None else None
        concepts.check_model(self.adapter.n_layers, self.adapter.hidden_size, bundle.name)  # layers (and raw SAEs' widths)

    @property
    def model(self) -> torch.nn.Module:
        return self.bundle.model

    # -- programs ---------------------------------------------------------------------------
    def compile(self, source: str | Path | ir.Program, *, file: str | None = None) -> ir.Program:
        """Text (str), a file (Path) or ready IR -> IR checked against this session's concepts."""
        if isinstance(source, ir.Program):
            return source
        return compile_program(source, HeaderOverride(self.concepts) if self.dictionary_override else self.concepts, file=file)

    def check_header(self, program: ir.Program) -> None:
        """The program's `model` / `dictionary` must name this session's (InputError otherwise)."""
        h = program.header
        models = {self.bundle.name, self.concepts.model}
        if h.model is not None and h.model not in models:
            raise InputError(f"{_header_place(program, 'model')}the program is written for model {h.model!r}, but the "
                             f"session has {self.bundle.name!r}")
        if h.dictionary is not None and h.dictionary != self.concepts.name and not self.dictionary_override:
            raise InputError(f"{_header_place(program, 'dictionary')}the program is written for dictionary "
                             f"{h.dictionary!r}, but the session has {self.concepts.name!r}")

    def plan(self, program: ir.Program, *, trace: bool = True, dense: bool | None = None) -> HookPlan:
        """Check the header and compile the IR to a hook plan (no model run)."""
        self.check_header(program)
        plan = compile_plan(program, self.concepts, n_layers=self.adapter.n_layers, hidden_size=self.adapter.hidden_size,
                            dense=self.dense if dense is None else dense, trace=trace)
        for note in self.adapter.edit_notes([(e.scope.kind, e.layers) for e in plan.edits]):
            warnings.warn(note, SteerWarning, stacklevel=3)
        return plan

    def steer(self, program: ir.Program | str | Path, *, trace: bool = True, dense: bool | None = None,
              on_forward: Callable[[int], None] | None = None,
              image_sizes: Sequence[tuple[int, int]] | None = None) -> Steerer:
        """A context manager steering every generation of `self.model` inside it.

        `image_sizes`: (height, width) of each sample's image, for families that cut an image into
        tiles chosen by its size (InternVL, AyaVision): without them, regions refuse on their tiles."""
        prog = self.compile(program)
        self.adapter.image_sizes = list(image_sizes) if image_sizes is not None else None
        return Steerer(self.adapter, self.plan(prog, trace=trace, dense=dense), trace=trace, on_forward=on_forward)

    # -- running ----------------------------------------------------------------------------
    def images_for(self, program: ir.Program, images: Sequence[Image.Image | str | Path] | None) -> list[tuple[str | None, Image.Image]]:
        """(name, image) pairs: the given images, else the program's `image` (relative to its file)."""
        if not images:
            if program.header.image is None:
                raise no_image_error(program.source)
            base = Path(program.source).parent if program.source and program.source != "<string>" else Path()
            images = [base / program.header.image]
        out = []
        for im in images:
            if isinstance(im, Image.Image):
                out.append((None, im.convert("RGB")))
            else:
                out.append((str(im), load_image(im)))
        return out

    def _generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int, sample: bool,
                  seed: int | None) -> list[str]:
        enc = self.bundle.encode(images, [prompt] * len(images))
        self.adapter.image_sizes = [(im.height, im.width) for im in images]
        tok = self.bundle.tokenizer
        ctx = torch.random.fork_rng() if sample else contextlib.nullcontext()
        with ctx, torch.no_grad():
            if sample:
                torch.manual_seed(0 if seed is None else seed)
            gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        return [s.strip() for s in tok.batch_decode(new, skip_special_tokens=True)]

    def run(self, program: ir.Program | str | Path, images: Sequence[Image.Image | str | Path] | None = None,
            prompt: str | None = None, *, max_new_tokens: int | None = None, compare: bool = False,
            sample: bool = False, seed: int | None = None, trace: bool = True, dense: bool | None = None,
            batch_size: int = 64, on_forward: Callable[[int], None] | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> list[RunResult]:
        """Run `program` on each image (batched): steered output, baseline if `compare`, expectations.

        `on_progress(done, total)` is called once the images are loaded (done 0) and after each batch.
        """
        from steerlang.models.bundle import DEFAULT_PROMPT

        prog = self.compile(program)
        plan = self.plan(prog, trace=trace, dense=dense)  # every check before the model runs
        named = self.images_for(prog, images)
        text = prompt if prompt is not None else prog.header.ask or DEFAULT_PROMPT
        tokens = max_new_tokens or prog.header.generate or DEFAULT_TOKENS
        results: list[RunResult] = []
        if on_progress is not None:
            on_progress(0, len(named))
        for start in range(0, len(named), batch_size):
            chunk = named[start : start + batch_size]
            pics = [im for _n, im in chunk]
            baseline = self._generate(pics, text, tokens, sample, seed) if compare else [None] * len(chunk)
            with Steerer(self.adapter, plan, trace=trace, on_forward=on_forward) as st:
                outputs = self._generate(pics, text, tokens, sample, seed)
            tr = st.trace if trace else None
            for i, ((name, _im), out, base) in enumerate(zip(chunk, outputs, baseline, strict=True)):
                results.append(RunResult(name, text, out, base, self.expectations(prog, out, tr, i), tr, i))
            if on_progress is not None:
                on_progress(len(results), len(named))
        return results

    @staticmethod
    def expectations(program: ir.Program, output: str, trace: Trace | None, sample: int) -> list[ExpectationResult]:
        """Check the program's expectations on one steered output (and its trace)."""
        out = []
        for e in program.expectations:
            if isinstance(e, ir.ExpectText):
                found = has_word(output, e.text)
                out.append(ExpectationResult(_phrase(e), found == e.has, f"{'found' if found else 'not found'} in {output!r}"))
                continue
            c = e.condition
            label = concept_label(c.concept)
            if trace is None or label not in trace.acts:
                out.append(ExpectationResult(_phrase(e), False, "not traced (the concept has no group at any layer)"))
                continue
            v = float(trace.max_activation(label, c.modality or "image")[sample])
            ok = v > c.threshold if c.op == ">" else v < c.threshold
            out.append(ExpectationResult(_phrase(e), ok, f"max activation {v:.3f}"))
        return out

    def generate(self, images: Sequence[Image.Image | str | Path], prompt: str | None = None, *,
                 max_new_tokens: int = DEFAULT_TOKENS, sample: bool = False, seed: int | None = None) -> list[str]:
        """Unsteered outputs (the baseline)."""
        from steerlang.models.bundle import DEFAULT_PROMPT

        pics = [im.convert("RGB") if isinstance(im, Image.Image) else load_image(im) for im in images]
        return self._generate(pics, prompt or DEFAULT_PROMPT, max_new_tokens, sample, seed)

"""Harvest residual-stream activations of any supported model over any image-caption dataset,
labelled by position (image, prompt, caption) and streamed to shards on disk.

Inputs. Each sample becomes one teacher-forced sequence, the image and the prompt in the model's own
format followed by the caption as the answer:

- a processor with a chat template: a user turn ``[image, prompt text]`` (the text left out when
  there is no prompt) and an assistant turn ``[caption]``, rendered by ``apply_chat_template``;
- otherwise the bundle's template (``"{image} {prompt}"``; the toy model's ``"{prompt} {image}"``),
  a space, the caption and the tokenizer's end-of-sequence token (the toy model was trained so).

The prompt of a sample is its own (a dataset's ``prompt_column``), else ``prompt=`` (``--prompt``),
else the model's own: a ``steerlang.json`` beside the weights may name it (``"prompt"``), and the toy
world's models (shipped or retrained) use their describe prompt. A chat model may go without one;
any other model without one is an `InputError` naming ``--prompt``.

The caption's tokens are found by tokenizing the text up to the caption, through it, and whole
(the caption is what the whole text's tokens share with the second and not with the first), then
finding that run of ids in the processor's output, after the last image position (the processor
expands the image placeholder and may add tokens of its own).

Positions, through the runtime's adapter (`steerlang.runtime.adapters`), never a family's
internals: the adapter's image mask and patch layout give `masks.Layout.from_prefill`, the reading
the runtime steers with. Image positions keep their patch index (the primary view first, then further
views, tiles or images); image-token positions that are not patches (LLaVA-NeXT's row newlines),
``<s>`` and padding are dropped. Caption positions are the caption's tokens (and the end-of-sequence
token of a template without chat); prompt positions are the other text positions before the caption;
what a chat template puts after the caption (its end-of-turn) is dropped.

Layer numbering (everywhere in steerlang, as HF ``hidden_states`` and TransformerLens ``resid_pre``):
layer L is the residual stream entering decoder block L; layer 0 is the language model's input (the
projector's output merged into the text embeddings) and layer n_layers is the last block's output.
The forward stops after the deepest harvested layer (the LM head is never run).

Shards (`steerlang.dictionary.source`): the ``scene`` column holds each sample's row in its dataset
(the scene index for the toy world). A harvest is deterministic: samples are read in the dataset's
order, batched in that order (sequences right-padded, so positions do not depend on the batch) and
cut into shards of exactly ``shard_size`` rows, so a rerun writes the same files bit for bit.
It is written in a hidden sibling of ``out`` (``.<name>.partial``) and moved into place when
complete. That folder records the harvest's settings (dataset, model, prompt, layers, sizes) and,
after every shard, how far it got; an interrupted harvest rerun with the same settings keeps its
complete shards and continues from the batch the next shard starts in, which gives the same files
as an uninterrupted run (with other settings it starts over, saying so). Memory stays bounded: one
batch of samples and at most one shard of rows are held at a time.

Nothing here imports `steerlang.world` at import time: the toy world's own harvests (`harvest`,
its question prompts) load `steerlang.world.toy_harvest` when they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from steerlang.atomic import replace_dir, write_text
from steerlang.data.report import BadRow, DataReport
from steerlang.data.sample import Dataset, Sample
from steerlang.dictionary import distributed as _dist
from steerlang.dictionary.source import LABELS, MANIFEST, MODALITY_CODES, ShardWriter, acts_key, read_manifest
from steerlang.errors import InputError, SteerError
from steerlang.runtime.adapters import ModelAdapter, adapter_for
from steerlang.runtime.masks import IMAGE, PAD, Layout

if TYPE_CHECKING:
    from steerlang.models.bundle import ModelBundle

__all__ = [
    "LM_INPUT", "HarvestStatus", "LayerCapture", "check_harvest", "check_layers", "decoder_layers", "harvest", "harvest_dataset",
    "harvest_status", "hook_point", "model_prompt", "partial_dir",
]

LM_INPUT = 0
DEFAULT_BATCH = 16
DEFAULT_SHARD_ROWS = 65536
MODEL_PROMPT_FILE = "steerlang.json"  # a model folder's steerlang settings (the toy model's template)
RECORD = "harvest.json"  # in the partial folder: the settings the shards were harvested with
PROGRESS = "progress.json"  # in the partial folder: the complete shards and where to continue
FORMAT = 1  # of the harvest record; a change starts unfinished harvests over

# The toy-world helpers live in toy_harvest (which imports steerlang.world); loaded on first use.
_TOY = ("PROMPT_SETS", "harvest_examples", "position_labels", "scene_batch", "ToyExamples")


def __getattr__(name: str) -> Any:
    if name in _TOY:
        from steerlang.world import toy_harvest

        return getattr(toy_harvest, name)
    raise AttributeError(f"module 'steerlang.dictionary.harvest' has no attribute {name!r}")


# -- layers ------------------------------------------------------------------------------------
def _adapter(bundle: Any) -> ModelAdapter:
    return bundle if isinstance(bundle, ModelAdapter) else adapter_for(bundle.model)


def decoder_layers(bundle: ModelBundle) -> torch.nn.ModuleList:
    """The language model's decoder blocks, where the model's family keeps them (its adapter)."""
    return _adapter(bundle).decoder_layers()


def check_layers(bundle: ModelBundle | ModelAdapter, layers: Sequence[int]) -> list[int]:
    """Validate layer numbers: 0 (LM input) to n_layers (the last block's output); sorted, unique."""
    n = _adapter(bundle).n_layers
    for layer in layers:
        if not 0 <= layer <= n:
            raise InputError(f"--layer: {layer} is out of range; this model has layers 0 (LM input) to {n} (last block's output)")
    out = sorted({int(la) for la in layers})
    if not out:
        raise InputError("--layers: give at least one layer")
    return out


def hook_point(bundle: ModelBundle | ModelAdapter, layer: int) -> tuple[torch.nn.Module, bool]:
    """(module, is_pre): layer L < n is the input of block L (a pre-hook); L = n the last block's output."""
    ad = _adapter(bundle)
    check_layers(ad, [layer])
    return ad.hook_point(layer)


class _Stop(Exception):  # noqa: N818 - control flow, never seen outside this module
    """Raised by a capture hook once every layer is captured: the rest of the forward is not needed."""


class LayerCapture:
    """Context manager capturing hidden states at the chosen layers during forward passes.

    With ``stop=True`` the forward is cut short once every layer is captured (catch nothing: the
    harvester's `_forward` does); hooks are removed on exit whatever happened."""

    def __init__(self, bundle: ModelBundle | ModelAdapter, layers: Sequence[int], *, stop: bool = False) -> None:
        self.adapter = _adapter(bundle)
        self.layers = list(layers)
        self.stop = stop
        self.captured: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        try:
            for layer in self.layers:
                module, is_pre = hook_point(self.adapter, layer)
                if is_pre:
                    self._handles.append(module.register_forward_pre_hook(self._make_pre(layer), with_kwargs=True))
                else:
                    self._handles.append(module.register_forward_hook(self._make_post(layer)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _keep(self, layer: int, hidden: Tensor) -> None:
        self.captured[layer] = hidden.detach()
        if self.stop and len(self.captured) == len(set(self.layers)):
            raise _Stop

    def _make_pre(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            self._keep(layer, args[0] if args else kwargs["hidden_states"])

        return hook

    def _make_post(self, layer: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: tuple, output: Tensor | tuple) -> None:
            self._keep(layer, output[0] if isinstance(output, tuple) else output)

        return hook

    def __exit__(self, *_exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


# -- prompts and inputs ------------------------------------------------------------------------
def model_prompt(bundle: ModelBundle) -> str | None:
    """The prompt a model carries itself: ``"prompt"`` of a ``steerlang.json`` in its folder; for
    the toy world's models (``steerlang.json`` with a template only, or the name "toyworld"), its
    describe prompt. None for any other model."""
    path = getattr(bundle, "path", None)
    own = Path(path) / MODEL_PROMPT_FILE if path is not None else None
    if own is not None and own.is_file():
        try:
            cfg = json.loads(own.read_text())
        except (OSError, ValueError):
            cfg = {}
        prompt = cfg.get("prompt") if isinstance(cfg, dict) else None
        if isinstance(prompt, str) and prompt.strip():
            return prompt
    elif getattr(bundle, "name", None) != "toyworld":
        return None
    from steerlang.models.bundle import DEFAULT_PROMPT

    return DEFAULT_PROMPT


def _has_chat(bundle: ModelBundle) -> bool:
    return bool(getattr(bundle, "chat", False)) and bool(getattr(bundle.processor, "chat_template", None))


@dataclass(frozen=True)
class _Prompts:
    """Where each sample's (prompt, answer) comes from (module docstring)."""

    fixed: str | None  # prompt= (--prompt)
    own: str | None  # the model's own prompt
    chat: bool
    per_row: bool  # the dataset reads a prompt column
    example: Callable[[Sample], tuple[str | None, str]] | None  # the toy world's own prompts and answers

    def key(self) -> dict[str, Any]:
        if self.example is not None:
            return {"examples": str(getattr(self.example, "key", type(self.example).__name__))}
        return {"prompt": self.fixed, "model_prompt": self.own if self.fixed is None else None, "chat": self.chat,
                "per_row": self.per_row}

    def of(self, sample: Sample, model: str) -> tuple[str | None, str]:
        if self.example is not None:
            return self.example(sample)
        prompt = sample.prompt or self.fixed or self.own
        if not prompt and not self.chat:
            where = f" (row {sample.row}, {sample.name}, has none)" if self.per_row else ""
            raise InputError(f"--prompt: {model} has no chat template and no prompt of its own{where}; "
                             "give the prompt to ask with each image, e.g. --prompt \"Describe the image.\"")
        return prompt, sample.text


def _sample_text(bundle: ModelBundle, prompt: str | None, answer: str, chat: bool) -> tuple[str, int, int]:
    """(text, start, end): the sequence as text, and where the answer's characters are in it."""
    proc = bundle.processor
    if chat:
        user: list[dict[str, Any]] = [{"type": "image"}]
        if prompt:
            user.append({"type": "text", "text": prompt})
            if bundle.template.find("{prompt}") < bundle.template.find("{image}"):
                user.reverse()
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        text = proc.apply_chat_template(messages, tokenize=False)  # type: ignore[attr-defined]
        at = text.rfind(answer)
        if at < 0:
            raise SteerError(f"{bundle.name}: its chat template does not write the caption {answer!r} into the text "
                             "as given, so its tokens cannot be found")
        return text, at, at + len(answer)
    head = bundle.template.format(image=proc.image_token, prompt=prompt or "")  # type: ignore[attr-defined]
    text = f"{head} {answer}"
    eos = getattr(bundle.tokenizer, "eos_token", None)
    return text + (eos or ""), len(head) + 1, len(text) + len(eos or "")


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _answer_ids(tok: Any, text: str, start: int, end: int) -> list[int]:
    """The ids of text[start:end] as they are tokenized inside the whole text."""
    whole = list(tok(text).input_ids)
    s = _lcp(tok(text[:start]).input_ids, whole)
    e = _lcp(tok(text[:end]).input_ids, whole)
    return whole[s:e]


def _find_last(row: list[int], needle: list[int], lo: int) -> int | None:
    n = len(needle)
    for p in range(len(row) - n, lo - 1, -1):
        if row[p : p + n] == needle:
            return p
    return None


def _encode(bundle: ModelBundle, images: list[Any], texts: list[str]) -> dict[str, Any]:
    """The processor's inputs for a batch, right-padded (each sequence keeps positions 0..len-1)."""
    from steerlang.models.families import family_of

    fam = family_of(type(bundle.model).__name__)
    pics: list[Any] = [[im] for im in images] if fam is not None and fam.nest_images else list(images)
    tok = bundle.tokenizer
    side = getattr(tok, "padding_side", None)
    try:
        if side is not None:
            tok.padding_side = "right"
        out = dict(bundle.processor(images=pics, text=texts, return_tensors="pt", padding=True))  # type: ignore[operator]
    finally:
        if side is not None:
            tok.padding_side = side
    out.pop("labels", None)  # PaliGemma's processor adds training labels
    return out


def _to_model(inputs: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Inputs on the model's device; floating inputs (pixels) in the model's dtype."""
    device = getattr(model, "device", None)
    if device is None:
        device = next(model.parameters()).device
    dtype = getattr(model, "dtype", None)
    out = {}
    for k, v in inputs.items():
        if isinstance(v, Tensor):
            v = v.to(device)
            if v.is_floating_point() and isinstance(dtype, torch.dtype) and dtype.is_floating_point and v.dtype != dtype:
                v = v.to(dtype)
        out[k] = v
    return out


def _bos_id(bundle: ModelBundle, adapter: ModelAdapter) -> int | None:
    bos = getattr(adapter.text_config, "bos_token_id", None)
    if not isinstance(bos, int):
        bos = getattr(bundle.tokenizer, "bos_token_id", None)
    return bos if isinstance(bos, int) else None


@dataclass
class _Batch:
    acts: dict[int, Tensor]  # [N, d] per layer, the kept positions in (sample, position) order
    modality: Tensor
    cell: Tensor
    scene: Tensor
    position: Tensor

    @property
    def rows(self) -> int:
        return int(self.modality.shape[0])

    def tail(self, skip: int) -> _Batch:
        return _Batch({k: v[skip:] for k, v in self.acts.items()}, self.modality[skip:], self.cell[skip:],
                      self.scene[skip:], self.position[skip:])


def _run_batch(bundle: ModelBundle, adapter: ModelAdapter, layers: list[int], samples: list[Sample],
               prompts: _Prompts) -> _Batch:
    """Encode, run and label one batch of samples."""
    texts, answers = [], []
    for s in samples:
        prompt, answer = prompts.of(s, bundle.name)
        text, start, end = _sample_text(bundle, prompt, answer, prompts.chat)
        texts.append(text)
        answers.append(_answer_ids(bundle.tokenizer, text, start, end))
        if not answers[-1]:
            raise SteerError(f"row {s.row} ({s.name}): the caption {answer!r} gives no tokens of its own in {bundle.name}'s input")
    raw = _encode(bundle, [s.image for s in samples], texts)
    inputs = _to_model(raw, bundle.model)
    ids = inputs["input_ids"]
    attn = inputs.get("attention_mask")
    kwargs = dict(inputs)  # one dict: the adapter computes the layout once per call
    image_mask = adapter.image_mask(ids).cpu()
    try:
        layout = Layout.from_prefill(ids.cpu(), None if attn is None else attn.cpu(), image_mask,
                                     lambda i: adapter.patch_grid(kwargs, i), _bos_id(bundle, adapter))
    finally:
        adapter._grids = None  # the call's inputs (and vision features): not kept past the batch
    kind, patch = layout.kind, layout.patch
    n, t = ids.shape
    caption = torch.zeros((n, t), dtype=torch.bool)
    after = torch.zeros((n, t), dtype=torch.bool)
    rows = ids.cpu().tolist()
    real = attn.cpu().bool() if attn is not None else torch.ones((n, t), dtype=torch.bool)
    for b, s in enumerate(samples):
        img = (kind[b] == IMAGE).nonzero().flatten()
        lo = int(img.max()) + 1 if len(img) else 0
        if not len(img):
            raise SteerError(f"row {s.row} ({s.name}): {bundle.name}'s input holds no image positions")
        p = _find_last(rows[b], answers[b], lo)
        if p is None or not bool(real[b, p : p + len(answers[b])].all()):
            raise SteerError(f"row {s.row} ({s.name}): the caption's tokens are not in {bundle.name}'s input after the "
                             "image; its processor changed them")
        caption[b, p : p + len(answers[b])] = True
        after[b, p + len(answers[b]) :] = True
    keep = (kind != PAD) & ~after
    modality = torch.full((n, t), MODALITY_CODES["prompt"], dtype=torch.uint8)
    modality[kind == IMAGE] = MODALITY_CODES["image"]
    modality[caption] = MODALITY_CODES["caption"]
    if int(patch.max()) > torch.iinfo(torch.int16).max:
        raise SteerError(f"{bundle.name}: an image has more than {torch.iinfo(torch.int16).max} patches")
    cell = torch.where(kind == IMAGE, patch, -1).to(torch.int16)
    captured = _forward(bundle, layers, inputs)
    scene = torch.tensor([s.row for s in samples], dtype=torch.int32)[:, None].expand(n, t)
    position = torch.arange(t, dtype=torch.int32)[None].expand(n, t)
    dev_keep = keep.to(next(iter(captured.values())).device)
    return _Batch({la: captured[la][dev_keep] for la in layers}, modality[keep], cell[keep], scene[keep], position[keep])


def _forward(bundle: ModelBundle, layers: list[int], inputs: dict[str, Any]) -> dict[int, Tensor]:
    with LayerCapture(bundle, layers, stop=True) as cap:
        try:
            bundle.model(**inputs)
        except _Stop:
            pass
    missing = [la for la in layers if la not in cap.captured]
    if missing:
        raise SteerError(f"{bundle.name}: the forward never reached layers {missing}")
    return cap.captured


# -- settings, fingerprints, resume ------------------------------------------------------------
def partial_dir(out: str | os.PathLike) -> Path:
    """Where a harvest into `out` is written until complete: ``.<name>.partial`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _dataset_desc(ds: Dataset, shard: tuple[int, int] | None) -> dict[str, Any]:
    return {"kind": ds.kind, "location": ds.location, "caption_column": getattr(ds, "caption_column", None),
            "prompt_column": getattr(ds, "prompt_column", None), "split": getattr(ds, "split", None),
            "rows": ds.count_rows(), "shard": list(shard) if shard else None}


def _dataset_fingerprint(ds: Dataset) -> dict[str, Any]:
    """What changes when the dataset changes: its files' sizes and times (or the toy options)."""
    loc = Path(ds.location)
    files: list[Any] = []
    if loc.is_file():
        files = [_stat(loc)]
    elif loc.is_dir():
        files = [_stat(p) for p in sorted(loc.iterdir()) if p.is_file()]
    return {"location": str(loc.resolve()) if loc.exists() else ds.location, "files": files,
            "options": getattr(ds, "options", None)}


def model_fingerprint(bundle: ModelBundle) -> str:
    """A digest that changes when the model changes: its folder's files (names, sizes, times), or,
    for a model that has no folder, its weights."""
    h = hashlib.sha256(type(bundle.model).__name__.encode())
    path = getattr(bundle, "path", None)
    if path is not None and Path(path).is_dir():
        for f in sorted(Path(path).iterdir()):
            if f.is_file():
                h.update(json.dumps(_stat(f)).encode())
    else:
        for name, t in bundle.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class HarvestStatus:
    """What an unfinished harvest into `out` has kept (`harvest_status`)."""

    dir: Path
    shards: int
    rows: int
    samples: int  # samples whose rows are all in the kept shards


def harvest_status(out: str | os.PathLike) -> HarvestStatus | None:
    """The unfinished harvest of `out`, if one is kept (the CLI says it on Ctrl-C)."""
    part = partial_dir(out)
    try:
        rec = json.loads((part / RECORD).read_text())
        prog = json.loads((part / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    shards = prog.get("shards", [])
    done = int(prog.get("batch", 0)) * int(rec.get("settings", {}).get("batch_size", 0))
    return HarvestStatus(part, len(shards), sum(int(s["rows"]) for s in shards), done)


def _empty(folder: Path, keep: Sequence[str] = ()) -> None:
    for p in folder.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _resume_point(part: Path, record: dict[str, Any], log: Callable[[str], None]) -> tuple[list[dict[str, Any]], int, int]:
    """(shards kept, batch to continue from, rows of that batch already in the shards); makes
    `part` ready: what an earlier run with the same settings completed is kept, the rest removed."""
    try:
        old = json.loads((part / RECORD).read_text())
    except (OSError, ValueError):
        old = None
    leftovers = [p.name for p in part.iterdir()]
    if old != record:
        if leftovers:
            why = "other settings" if old is not None else "no record of its settings"
            log(f"{part} holds an unfinished harvest with {why}; starting over")
            _empty(part)
        write_text(part / RECORD, json.dumps(record, indent=1) + "\n")
        return [], 0, 0
    try:
        prog = json.loads((part / PROGRESS).read_text())
        shards = [dict(s) for s in prog["shards"]]
        batch, skip = int(prog["batch"]), int(prog["skip"])
        ok = all((part / s["file"]).is_file() and (part / s["file"]).stat().st_size == s["bytes"] for s in shards)
    except (OSError, ValueError, KeyError, TypeError):
        ok, shards, batch, skip = False, [], 0, 0
    if not ok:
        if any(n != RECORD for n in leftovers):
            log(f"{part}: the unfinished harvest's shards do not match its record; starting over")
        _empty(part, keep=(RECORD,))
        return [], 0, 0
    _empty(part, keep=(RECORD, PROGRESS, *(s["file"] for s in shards)))
    return shards, batch, skip


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (made if needed): a second harvest of the same target
    waits for the first, then finds its result."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _batches(stream: Iterator[Sample], size: int, limit: int | None) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    n = 0
    for s in stream:
        if limit is not None and n >= limit:
            break
        batch.append(s)
        n += 1
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_manifest_meta(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / MANIFEST).read_text()).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None


# -- the harvest -------------------------------------------------------------------------------
def _check(bundle: ModelBundle, adapter: ModelAdapter, ds: Dataset, layers: Sequence[int] | None, prompt: str | None,
           example: Callable[[Sample], tuple[str | None, str]] | None) -> tuple[list[int], _Prompts]:
    layers = check_layers(adapter, range(0, adapter.n_layers + 1) if layers is None else layers)
    prompts = _Prompts(prompt or None, model_prompt(bundle), _has_chat(bundle), getattr(ds, "prompt_column", None) is not None,
                       example)
    if example is None and not (prompts.fixed or prompts.own or prompts.chat or prompts.per_row):
        raise InputError(f"--prompt: {bundle.name} has no chat template and no prompt of its own; give the prompt to ask "
                         "with each image, e.g. --prompt \"Describe the image.\"")
    return layers, prompts


def check_harvest(bundle: ModelBundle, dataset: Dataset, layers: Sequence[int] | None, prompt: str | None = None) -> list[int]:
    """The checks `harvest_dataset` makes before it reads any sample (the layers, and a prompt for a
    model that needs one); returns the layers it will harvest. The CLI calls it before drawing
    progress bars."""
    return _check(bundle, adapter_for(bundle.model), dataset, layers, prompt, None)[0]


@torch.no_grad()
def harvest_dataset(
    bundle_or_model: ModelBundle | str | os.PathLike,
    dataset: Dataset | str | os.PathLike,
    layers: Sequence[int] | None,
    out: str | os.PathLike,
    *,
    prompt: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    shard_size: int = DEFAULT_SHARD_ROWS,
    max_samples: int | None = None,
    shard: tuple[int, int] | None = None,
    on_batch: Callable[[int], None] | None = None,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] | None = None,
    example: Callable[[Sample], tuple[str | None, str]] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Harvest `layers` (None: all, 0 to n_layers) of a model over a dataset into the shard folder `out`.

    `bundle_or_model`: a loaded `ModelBundle`, or what `steerlang.load_model` takes. `dataset`: a
    `steerlang.data.Dataset`, or what `open_dataset` takes (opened with its defaults). `prompt`: the
    prompt for samples without their own (see the module docstring for the order). `batch_size`
    samples per forward; `shard_size` rows (token positions) per shard; `max_samples`: stop after
    that many good samples; `shard=(rank, world_size)`: harvest that slice of the dataset. Bad rows
    are skipped and counted (the manifest's ``metadata.data``). `on_batch(n)` after each batch of
    `n` samples (once, with the count, for the samples a resumed harvest already has); `log(line)`
    says when an unfinished harvest is resumed or started over. `example(sample) -> (prompt,
    answer)` replaces the prompt and caption (the toy world's own harvests); `metadata` is added to
    the manifest's. Returns `out`; one that already holds this very harvest is returned as it is.
    """
    from steerlang.data.api import open_dataset

    log = log or (lambda _m: None)
    if isinstance(bundle_or_model, (str, os.PathLike)):
        from steerlang.models.bundle import load_model

        bundle = load_model(bundle_or_model)
    else:
        bundle = bundle_or_model
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    adapter = adapter_for(bundle.model)
    layers, prompts = _check(bundle, adapter, ds, layers, prompt, example)
    for flag, v in (("--batch-size", batch_size), ("--shard-size", shard_size)):
        if v < 1:
            raise InputError(f"{flag}: must be at least 1, got {v}")
    if max_samples is not None and max_samples < 1:
        raise InputError(f"--max-samples: must be at least 1, got {max_samples}")
    if dtype not in (torch.float16, torch.float32):
        raise InputError(f"--dtype: activations are stored as float32 or float16, got {dtype}")
    settings = {
        "format": FORMAT, "dataset": _dataset_desc(ds, shard), "model": bundle.name, "model_class": type(bundle.model).__name__,
        "prompt": prompts.key(), "layers": layers, "dtype": str(dtype).removeprefix("torch."), "batch_size": batch_size,
        "shard_size": shard_size, "max_samples": max_samples,
    }
    settings = json.loads(json.dumps(settings))
    fingerprint = {"model": model_fingerprint(bundle), "dataset": _dataset_fingerprint(ds)}
    record = json.loads(json.dumps({"settings": settings, "fingerprint": fingerprint}))  # as it reads back from disk
    final = Path(out)
    if final.exists() and not final.is_dir():
        raise InputError(f"--out: {final} is a file; give a new folder for the activations")
    if (final / MANIFEST).is_file():
        meta = _read_manifest_meta(final)
        if meta is not None and meta.get("harvest") == settings:
            return final
        raise InputError(f"--out: {final} already holds a harvest with other settings; give a new folder")
    if final.is_dir() and any(final.iterdir()):
        raise InputError(f"--out: {final} is not empty and holds no finished harvest; give a new folder for the activations")
    try:
        grid: Any = list(adapter.fixed_grid())
    except (InputError, SteerError, AttributeError):
        grid = None
    if shard is None and _dist.active():
        return _harvest_distributed(bundle, adapter, ds, layers, prompts, final, settings, record, grid, batch_size=batch_size,
                                    shard_size=shard_size, max_samples=max_samples, on_batch=on_batch, dtype=dtype, log=log,
                                    metadata=metadata)
    _harvest_into(bundle, adapter, layers, prompts, final, record, grid, ds.iter(shard=shard), None, batch_size=batch_size,
                  shard_size=shard_size, max_samples=max_samples, on_batch=on_batch, dtype=dtype, log=log, metadata=metadata,
                  settings=settings, location=ds.location)
    return final


def _harvest_into(bundle: ModelBundle, adapter: ModelAdapter, layers: list[int], prompts: _Prompts, final: Path,
                  record: dict[str, Any], grid: Any, stream: Any, batches: Iterator[list[Sample]] | None, *, batch_size: int,
                  shard_size: int, max_samples: int | None, on_batch: Callable[[int], None] | None, dtype: torch.dtype,
                  log: Callable[[str], None], metadata: dict[str, Any] | None, settings: dict[str, Any], location: str,
                  allow_empty: bool = False) -> None:
    """The harvest proper: `stream`'s samples (batched by `_batches`, or the given `batches` of it)
    into `final`, through its partial folder (resumable)."""
    part = partial_dir(final)
    with _locked(part):
        if (final / MANIFEST).is_file():  # another process finished this harvest while we waited
            with contextlib.suppress(OSError):
                part.rmdir()
            stream.close()
            return
        kept, start_batch, skip = _resume_point(part, record, log)
        if kept:
            log(f"resuming the unfinished harvest in {part}: keeping {len(kept)} shards "
                f"({sum(int(s['rows']) for s in kept):,} rows), continuing from sample {start_batch * batch_size}")
        state = {"batch": 0, "start": 0, "rows": 0}  # the batch being added: index, first row, rows

        def on_shard(entry: dict[str, Any]) -> None:
            done = writer.rows_written
            entries = [*kept_sizes, {**entry, "bytes": (part / entry["file"]).stat().st_size}]
            kept_sizes.append(entries[-1])
            if done >= state["start"] + state["rows"]:
                nxt, into = state["batch"] + 1, 0
            else:
                nxt, into = state["batch"], done - state["start"]
            write_text(part / PROGRESS, json.dumps({"shards": entries, "batch": nxt, "skip": into}, indent=1) + "\n")

        kept_sizes = [dict(s) for s in kept]
        writer = ShardWriter(part, layers, adapter.hidden_size, model=bundle.name, dtype=dtype, shard_rows=shard_size,
                             resume=[{k: v for k, v in s.items() if k != "bytes"} for s in kept], on_shard=on_shard)
        n_samples, skipped, rows = 0, 0, writer.rows_written
        try:
            for j, batch in enumerate(_batches(stream, batch_size, max_samples) if batches is None else batches):
                n_samples += len(batch)
                if j < start_batch:
                    skipped += len(batch)
                    continue
                if skipped and on_batch is not None:
                    on_batch(skipped)
                skipped = 0
                full = _run_batch(bundle, adapter, layers, batch, prompts)
                dropped = skip if j == start_batch else 0  # rows of this batch the kept shards hold
                state.update(batch=j, start=rows - dropped, rows=full.rows)
                b = full.tail(dropped) if dropped else full
                writer.add(b.acts, modality=b.modality, cell=b.cell, scene=b.scene, position=b.position)
                rows += b.rows
                if on_batch is not None:
                    on_batch(len(batch))
            if skipped and on_batch is not None:
                on_batch(skipped)
        finally:
            stream.close()
        report = stream.report
        if n_samples == 0 and not allow_empty:
            shutil.rmtree(part, ignore_errors=True)
            raise InputError(f"{location}: no usable sample to harvest ({report.summary()[0]})")
        writer.metadata = {**(metadata or {}), "harvest": settings, "samples": n_samples, "patch_grid": grid,
                           "data": report.to_json()}
        writer.close()
        (part / PROGRESS).unlink(missing_ok=True)
        (part / RECORD).unlink(missing_ok=True)
        replace_dir(part, final)


# -- several processes -------------------------------------------------------------------------
def ranks_dir(out: str | os.PathLike) -> Path:
    """Where the processes of a distributed harvest into `out` write their parts: ``.<name>.ranks``."""
    out = Path(out)
    return out.parent / f".{out.name}.ranks"


class _BlockStream:
    """The samples of rank `rank`'s batches among `world` processes: batch j of the dataset is rows
    ``[j*size, (j+1)*size)``, and rank r takes the batches with ``j % world == r``. Read as `size`
    round-robin shards of the dataset (``(r*size + t, world*size)``, t < size), one row of each per
    batch, so a process decodes only its own rows. Iterating gives one list of good samples per
    batch (empty batches left out); `report` adds up the shards' reports, every bad-row example kept
    (the merge chooses the first ones over all processes)."""

    def __init__(self, ds: Dataset, rank: int, world: int, size: int) -> None:
        self.ds, self.rank, self.world, self.size = ds, rank, world, size
        self._streams = [ds.iter(shard=(rank * size + t, world * size)) for t in range(size)]
        self.report = DataReport(ds.location, ds.kind, (rank, world), max_examples=ds.max_examples)

    def batches(self) -> Iterator[list[Sample]]:
        span = self.world * self.size
        heads: list[Sample | None] = [next(s, None) for s in self._streams]
        while any(h is not None for h in heads):
            q = min(h.row // span for h in heads if h is not None)
            batch = []
            for t, h in enumerate(heads):
                if h is not None and h.row // span == q:
                    batch.append(h)
                    heads[t] = next(self._streams[t], None)
            yield batch
        self._sum_reports()

    def _sum_reports(self) -> None:
        rep = self.report
        rep.good, rep.bad, rep.examples = 0, type(rep.bad)(), {}
        for s in self._streams:
            rep.good += s.report.good
            rep.bad.update(s.report.bad)
            for reason, exs in s.report.examples.items():
                rep.examples.setdefault(reason, []).extend(exs)
        for exs in rep.examples.values():
            exs.sort(key=lambda b: b.row)
        rep.complete = all(s.report.complete for s in self._streams)

    def close(self) -> None:
        for s in self._streams:
            s.close()
        if not self.report.complete:
            self._sum_reports()


def _harvest_distributed(bundle: ModelBundle, adapter: ModelAdapter, ds: Dataset, layers: list[int], prompts: _Prompts,
                         final: Path, settings: dict[str, Any], record: dict[str, Any], grid: Any, *, batch_size: int,
                         shard_size: int, max_samples: int | None, on_batch: Callable[[int], None] | None, dtype: torch.dtype,
                         log: Callable[[str], None], metadata: dict[str, Any] | None) -> Path:
    """Every process harvests its batches into ``.<name>.ranks/rank-R-of-N`` (each resumable on its
    own), then rank 0 merges them in sample order into `final`: the same shards, manifest and data
    report as a one-process harvest (bit for bit where the batches are the same, i.e. when the
    dataset has no bad rows: a bad row makes its batch smaller than in one process, and a batch's
    composition may change the last bits of its activations)."""
    if max_samples is not None:
        raise InputError("--max-samples: not supported when harvesting with several processes (the first N good samples "
                         "are only known once every process has read its rows); harvest with one process, or give a "
                         "corpus of the samples to harvest")
    rank, world = _dist.rank(), _dist.world_size()
    ranks = ranks_dir(final)
    mine = ranks / f"rank-{rank:05d}-of-{world:05d}"
    rank_settings = json.loads(json.dumps({**settings, "dataset": {**settings["dataset"], "shard": ["batches", rank, world]}}))
    rank_record = {**record, "settings": rank_settings}
    if not (final / MANIFEST).is_file():
        ranks.mkdir(parents=True, exist_ok=True)
        stream = _BlockStream(ds, rank, world, batch_size)
        progress = (lambda n: on_batch(n * world)) if on_batch is not None and rank == 0 else None  # rank 0 speaks for all
        _harvest_into(bundle, adapter, layers, prompts, mine, rank_record, grid, stream, stream.batches(),
                      batch_size=batch_size, shard_size=shard_size, max_samples=None, on_batch=progress, dtype=dtype, log=log,
                      metadata=None, settings=rank_settings, location=ds.location, allow_empty=True)
    _dist.barrier()
    if _dist.is_main():
        part = partial_dir(final)
        with _locked(part):
            if not (final / MANIFEST).is_file():
                _empty(part)
                parts = [ranks / f"rank-{r:05d}-of-{world:05d}" for r in range(world)]
                _merge_parts(parts, part, layers, adapter.hidden_size, bundle.name, dtype, shard_size,
                             {**(metadata or {}), "harvest": settings}, grid, ds)
                replace_dir(part, final)
            shutil.rmtree(ranks, ignore_errors=True)
    _dist.barrier()
    return final


class _PartRows:
    """The rows of one process's part, shard by shard, read in runs of samples (`take`)."""

    def __init__(self, folder: Path, layers: list[int]) -> None:
        self.folder, self.layers = folder, layers
        self.shards = [s["file"] for s in read_manifest(folder)["shards"]]
        self.i, self.at, self.scene = -1, 0, torch.zeros(0, dtype=torch.int32)
        self._next_shard()

    def _next_shard(self) -> None:
        self.i += 1
        self.at = 0
        if self.i < len(self.shards):
            from safetensors import safe_open

            with safe_open(str(self.folder / self.shards[self.i]), framework="pt") as f:
                self.scene = f.get_tensor("scene")
        else:
            self.scene = torch.zeros(0, dtype=torch.int32)

    def peek(self) -> int | None:
        """The dataset row of the next sample, None at the end."""
        return int(self.scene[self.at]) if self.at < len(self.scene) else None

    def take(self, below: int | None) -> dict[str, Tensor]:
        """The next rows whose sample comes before row `below` (all of them: None), within this shard."""
        rest = self.scene[self.at:]
        n = len(rest) if below is None else int((rest < below).sum())  # rows of a part are in row order
        from safetensors import safe_open

        with safe_open(str(self.folder / self.shards[self.i]), framework="pt") as f:
            out = {name: f.get_slice(name)[self.at : self.at + n] for name in [*(acts_key(la) for la in self.layers), *LABELS]}
        self.at += n
        if self.at >= len(self.scene):
            self._next_shard()
        return out


def _merge_parts(parts: list[Path], out: Path, layers: list[int], d_in: int, model: str, dtype: torch.dtype, shard_size: int,
                 metadata: dict[str, Any], grid: Any, ds: Dataset) -> None:
    """Write the processes' parts, merged in sample (dataset row) order, as the shards of one
    harvest into `out`, with the manifest a one-process harvest writes."""
    metas = [read_manifest(p).get("metadata", {}) for p in parts]
    writer = ShardWriter(out, layers, d_in, model=model, dtype=dtype, shard_rows=shard_size)
    cursors = [_PartRows(p, layers) for p in parts]
    while True:
        live = sorted((c for c in cursors if c.peek() is not None), key=lambda c: c.peek())
        if not live:
            break
        rows = live[0].take(live[1].peek() if len(live) > 1 else None)
        writer.add({la: rows[acts_key(la)] for la in layers}, modality=rows["modality"], cell=rows["cell"],
                   scene=rows["scene"], position=rows["position"])
    report = DataReport(ds.location, ds.kind, (0, 1), max_examples=ds.max_examples)
    report.complete = True
    for m in metas:
        data = m.get("data") or {}
        report.good += int(data.get("samples", 0))
        report.complete = report.complete and bool(data.get("complete"))
        for reason, n in (data.get("bad") or {}).items():
            report.bad[reason] += int(n)
    examples = sorted((BadRow(**ex) for m in metas for exs in ((m.get("data") or {}).get("examples") or {}).values()
                       for ex in exs), key=lambda b: b.row)
    for b in examples:
        kept = report.examples.setdefault(b.reason, [])
        if len(kept) < report.max_examples:
            kept.append(b)
    writer.metadata = {**metadata, "samples": sum(int(m.get("samples", 0)) for m in metas), "patch_grid": grid,
                       "data": report.to_json()}
    writer.close()


def harvest(
    bundle: ModelBundle,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    count: int,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    shard_rows: int = 65536,
    prompts: str = "describe",
    on_batch: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The toy world's own harvest: scenes 0..count-1 of stream `seed` (the dataset
    ``toyworld:SEED:COUNT``), each under the prompt `steer dict build` has always used for it (one of
    the describe prompts, or a yes/no question with prompts="questions"; see `toy_harvest`), through
    `harvest_dataset` into `out_dir` (resumable, moved into place when complete)."""
    from steerlang.data.toy import ToyWorldSource
    from steerlang.world.toy_harvest import ToyExamples, check_prompts

    if count <= 0:
        raise InputError(f"--count: must be at least 1, got {count}")
    check_prompts(prompts, "--prompts")
    adapter = adapter_for(bundle.model)
    layers = check_layers(adapter, range(0, adapter.n_layers + 1) if layers is None else layers)
    try:
        grid: Any = list(adapter.fixed_grid())
    except (InputError, SteerError):
        grid = None
    meta = {"scene_seed": seed, "scene_count": count, "patch_grid": grid, "prompts": prompts}
    return harvest_dataset(bundle, ToyWorldSource(seed, count), layers, out_dir, batch_size=batch_size, shard_size=shard_rows,
                           dtype=dtype, on_batch=on_batch, log=log, example=ToyExamples(seed, prompts), metadata=meta)


def caption_tokens(bundle: ModelBundle, dataset: Dataset, prompt: str | None = None,
                   on_sample: Callable[[], None] | None = None) -> dict[int, tuple[str, list[str]]]:
    """{row: (caption, its token strings)} for every good sample of `dataset`, exactly as
    `harvest_dataset` lays the caption out (same prompt, template and tokenization), so that the
    caption rows of a harvest, in position order, are these tokens. The concept builder reads words
    from them; a harvest stores no text."""
    adapter = adapter_for(bundle.model)
    _, prompts = _check(bundle, adapter, dataset, [0], prompt, None)
    tok = bundle.tokenizer
    out: dict[int, tuple[str, list[str]]] = {}
    stream = dataset.iter()
    try:
        for s in stream:
            p, answer = prompts.of(s, bundle.name)
            text, start, end = _sample_text(bundle, p, answer, prompts.chat)
            ids = _answer_ids(tok, text, start, end)
            out[int(s.row)] = (answer, [str(t) for t in tok.convert_ids_to_tokens(ids)])
            if on_sample is not None:
                on_sample()
    finally:
        stream.close()
    return out

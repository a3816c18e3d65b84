"""`audit()`: stream a corpus through the model in batches and score every sample, resumably.

With a `work_dir`, per-sample results are appended to ``samples.jsonl`` there and the running state
(SAE-V's top tokens, the worst samples' thumbnails, how many lines it covers) is saved atomically
to ``state.safetensors`` every `checkpoint_s` seconds and at the end. A rerun with the same inputs
reads both back and continues after the last sample saved (lines past the saved state are
dropped); a rerun with other inputs (another corpus, model, dictionary, layer, prompt or SAE-V
dictionary, or a corpus whose metadata file changed) starts over. The caller removes the folder
once the report is written (`steer audit` does).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from steerlang.atomic import write_text
from steerlang.audit.forward import DEFAULT_PROMPT, hidden_states, pair_batch
from steerlang.audit.readers import (
    AlignedPairs,
    EncodeOnce,
    SharedSAE,
    TopTokens,
    audit_concepts,
    check_hidden_size,
    group_max,
    load_shared_sae,
)
from steerlang.audit.report import AuditReport, ConceptInfo, SampleResult, Settings
from steerlang.audit.stats import mismatch, presence
from steerlang.data import Dataset, Sample, open_dataset
from steerlang.dictionary.concepts import ConceptSet, load_concept_set
from steerlang.errors import InputError

DEFAULT_LAYER = 2  # image groups and SAE-V
DEFAULT_TEXT_LAYER = 0  # caption groups: the LM input, where a caption token is its word alone
SAMPLES, STATE, META = "samples.jsonl", "state.safetensors", "meta.json"
THUMB_PX = 192


def audit(
    dataset: Dataset | str | os.PathLike,
    model: Any = "toyworld",
    concepts: ConceptSet | str | os.PathLike | None = None,
    *,
    layer: int | None = None,
    text_layer: int | None = None,
    all_concepts: bool = False,
    prompt: str | None = None,
    saev: str | os.PathLike | None = "auto",
    delta: float = 1.0,
    batch_size: int = 32,
    settings: Settings | None = None,
    work_dir: str | os.PathLike | None = None,
    checkpoint_s: float = 30.0,
    thumbnails: int = 12,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> AuditReport:
    """Audit an image-caption corpus with a model's joint concepts.

    `dataset`: a `steerlang.data` Dataset or anything `open_dataset` opens. `model`: a Session
    (its bundle and concept set), a model bundle, or a name for `steerlang.load_model`.
    `concepts`: a ConceptSet or folder (default: the session's, else "toyworld"). `layer` reads the
    image groups (and SAE-V) there, `text_layer` the caption groups; `layer` alone sets both; with
    neither, images are read at layer 2 and captions at layer 0 (`DEFAULT_LAYER`,
    `DEFAULT_TEXT_LAYER`: what the toy set reads best, see docs/audit.md). `prompt`: the
    prompt before the image (a row's own prompt wins; default "what is in the picture ?").
    `saev`: the SAE-V dictionary: a folder holding one SAE trained on both modalities at `layer`,
    "pairs" (the concept set's aligned pairs stand in for shared latents), "none", or "auto" (the
    concept set's own ``layer{L}-both`` SAE when it has one, else "pairs"). `delta`: SAE-V's
    activation bound, in the shared SAE's code units. `on_progress(rows_read, total_rows)`.
    """
    bundle, concept_set = _resolve(model, concepts)
    from steerlang.runtime.adapters import adapter_for

    adapter = adapter_for(bundle.model)
    layer, text_layer = (DEFAULT_LAYER if layer is None else layer,
                         (DEFAULT_TEXT_LAYER if layer is None else layer) if text_layer is None else text_layer)
    for flag, la in (("--layer", layer), ("--text-layer", text_layer)):
        if la < 0 or la > adapter.n_layers:
            raise InputError(f"{flag}: {la} is out of range; this model has layers 0 (LM input) to {adapter.n_layers}")
    chosen = audit_concepts(concept_set, layer, text_layer, all_concepts=all_concepts)
    sae_img, sae_txt = concept_set.sae(layer, "image"), concept_set.sae(text_layer, "text")
    for sae, m, la in ((sae_img, "image", layer), (sae_txt, "text", text_layer)):
        check_hidden_size(sae, adapter.hidden_size, f"the dictionary {concept_set.name!r} ({m}, layer {la})")
    reader = _saev_reader(saev, concept_set, layer, adapter.hidden_size, delta)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, max_examples=1000)
    total = ds.count_rows()
    prompt_text = prompt if prompt is not None else DEFAULT_PROMPT
    infos = [ConceptInfo(c.name, c.key, c.image.threshold, c.text.threshold) for c in chosen]
    fingerprint = {
        "version": 1, "dataset": ds.location, "rows": total, "data_file": _file_stamp(ds.location),
        "model": bundle.name, "model_path": str(getattr(bundle, "path", "") or ""),
        "dictionary": str(concept_set.root), "dictionary_file": _file_stamp(concept_set.root / "concepts.json"),
        "layer": layer, "text_layer": text_layer, "prompt": prompt_text, "concepts": [c.key for c in chosen],
        "saev": None if reader is None else reader.describe(),
    }
    work = _Work(Path(work_dir), fingerprint, reader, adapter.hidden_size) if work_dir is not None else None
    tracker = work.tracker if work is not None else (
        TopTokens(reader.n_latents, adapter.hidden_size, delta=reader.delta) if reader is not None else None)
    results: list[SampleResult] = list(work.results) if work is not None else []
    thumbs: dict[int, tuple[float, str]] = dict(work.thumbs) if work is not None else {}
    done = {r.row for r in results}
    t_img = np.array([c.image_threshold for c in infos])
    t_txt = np.array([c.text_threshold for c in infos])
    model_nn = bundle.model
    start = time.perf_counter()
    processed = 0
    stream = ds.iter()
    last_save = time.monotonic()
    try:
        for batch in _batches(stream, batch_size, done, on_progress, total):
            new = _score_batch(bundle, adapter, model_nn, (layer, text_layer), chosen, (sae_img, sae_txt), reader,
                               tracker, batch, prompt_text)
            results += new
            processed += len(new)
            mm = mismatch(presence(np.array([r.image for r in new]), t_img), presence(np.array([r.caption for r in new]), t_txt))
            for s, m in zip(batch, mm, strict=True):
                _keep_thumbnail(thumbs, s, float(m), thumbnails)
            if work is not None:
                work.append(new)
                if time.monotonic() - last_save >= checkpoint_s:
                    work.save(len(results), tracker, thumbs)
                    last_save = time.monotonic()
        if on_progress is not None:
            on_progress(stream.report.rows, total)
        if work is not None:
            work.save(len(results), tracker, thumbs)
    finally:
        stream.close()
        if work is not None:
            work.close()
    seconds = time.perf_counter() - start
    report_data = stream.report.to_json()
    if not results:
        raise InputError(_no_sample_message(ds.location, stream.report))
    results.sort(key=lambda r: r.row)
    return AuditReport(
        dataset=ds.location, model=bundle.name, dictionary=str(concept_set.root), layer=layer, text_layer=text_layer,
        prompt=prompt_text,
        concepts=infos, samples=results, data=report_data,
        saev=None if reader is None else {**reader.describe(), "top": tracker.top, "each": 5},
        saev_weights=None if tracker is None else tracker.weights(),
        settings=settings or Settings(), seconds=seconds if processed else 0.0, scored=processed,
        thumbnails={row: b64 for row, (_m, b64) in thumbs.items()},
    )


def _resolve(model: Any, concepts: ConceptSet | str | os.PathLike | None) -> tuple[Any, ConceptSet]:
    if hasattr(model, "bundle") and hasattr(model, "concepts"):  # a Session
        bundle, default = model.bundle, model.concepts
    elif isinstance(model, str | os.PathLike):
        import steerlang

        bundle, default = steerlang.load_model(model), None
    else:
        bundle, default = model, None
    if isinstance(concepts, ConceptSet):
        return bundle, concepts
    if concepts is None and default is not None:
        return bundle, default
    return bundle, load_concept_set(concepts if concepts is not None else "toyworld")


def _saev_reader(saev: str | os.PathLike | None, concept_set: ConceptSet, layer: int, hidden: int,
                 delta: float) -> SharedSAE | AlignedPairs | None:
    spec = "none" if saev is None else str(saev)
    if spec == "none":
        return None
    if spec == "auto":
        own = concept_set.sae_paths.get((layer, "both"))
        return load_shared_sae(own, layer, hidden, delta) if own is not None else AlignedPairs(concept_set, layer)
    if spec == "pairs":
        return AlignedPairs(concept_set, layer)
    if not Path(spec).is_dir():
        raise InputError(f'--saev: {spec} is not a dictionary folder (give one trained with --modality both, "pairs" or "none")')
    return load_shared_sae(spec, layer, hidden, delta)


def _batches(stream: Iterator[Sample], size: int, done: set[int], on_progress: Callable | None,
             total: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for s in stream:
        if on_progress is not None:
            on_progress(stream.report.rows, total)  # type: ignore[attr-defined]
        if s.row in done:
            continue
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def _score_batch(bundle: Any, adapter: Any, model: torch.nn.Module, layers: tuple[int, int], chosen: list,
                 saes: tuple[Any, Any], reader: SharedSAE | AlignedPairs | None, tracker: TopTokens | None,
                 batch: list[Sample], prompt: str) -> list[SampleResult]:
    n = len(batch)
    (layer, text_layer), (sae_img, sae_txt) = layers, (EncodeOnce(saes[0]), EncodeOnce(saes[1]))
    pb = pair_batch(bundle, adapter, [s.image for s in batch], [s.prompt or prompt for s in batch], [s.text for s in batch])
    hs = hidden_states(adapter, model, pb.inputs, [layer, text_layer])
    own_img, own_txt = pb.image.nonzero()[:, 0], pb.caption.nonzero()[:, 0]
    h_img, h_txt = hs[layer][pb.image], hs[layer][pb.caption]  # SAE-V reads both halves at `layer`
    h_cap = h_txt if text_layer == layer else hs[text_layer][pb.caption]
    a_img = torch.stack([group_max(c.image, sae_img, h_img, own_img, n) for c in chosen], 1)
    a_txt = torch.stack([group_max(c.text, sae_txt, h_cap, own_txt, n) for c in chosen], 1)
    l0: list[float | None] = [None] * n
    co: list[list[int] | None] = [None] * n
    if reader is not None and tracker is not None:
        z_img = reader.codes(h_img, "image", sae_img)
        z_txt = reader.codes(h_txt, "text", sae_txt if text_layer == layer else None)
        f = z_img.shape[1]
        m_img = torch.full((n, f), -torch.inf).scatter_reduce(0, own_img[:, None].expand(-1, f), z_img, reduce="amax")
        m_txt = torch.full((n, f), -torch.inf).scatter_reduce(0, own_txt[:, None].expand(-1, f), z_txt, reduce="amax")
        both = (m_img > reader.delta) & (m_txt > reader.delta)
        fire = reader.fire_bound()
        fires = torch.cat([(z_img > fire).sum(1), (z_txt > fire).sum(1)]).float()
        owner = torch.cat([own_img, own_txt])
        tokens = torch.zeros(n).index_add_(0, owner, torch.ones(len(owner)))
        per = torch.zeros(n).index_add_(0, owner, fires) / tokens.clamp(min=1)
        l0 = [float(x) for x in per]
        co = [both[i].nonzero().flatten().tolist() for i in range(n)]
        tracker.add(torch.cat([z_img, z_txt]), torch.cat([h_img, h_txt]),
                    torch.cat([torch.zeros(len(z_img), dtype=torch.bool), torch.ones(len(z_txt), dtype=torch.bool)]))
    return [SampleResult(s.row, s.name, s.text, [round(float(x), 5) for x in a_img[i]], [round(float(x), 5) for x in a_txt[i]],
                         l0[i], co[i]) for i, s in enumerate(batch)]


def _keep_thumbnail(thumbs: dict[int, tuple[float, str]], sample: Sample, score: float, limit: int) -> None:
    """Keep base64 PNGs of the `limit` samples with the highest mismatch so far (ties: lower row)."""
    if limit <= 0:
        return
    if len(thumbs) >= limit:
        worst_kept = min(thumbs, key=lambda r: (thumbs[r][0], -r))
        if (score, -sample.row) <= (thumbs[worst_kept][0], -worst_kept):
            return
        del thumbs[worst_kept]
    img = sample.image
    if max(img.size) > THUMB_PX:
        img = img.copy()
        img.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    thumbs[sample.row] = (score, base64.b64encode(buf.getvalue()).decode("ascii"))


def _file_stamp(path: str | os.PathLike) -> list[Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def _no_sample_message(location: str, report: Any) -> str:
    bad = dict(report.bad)
    if bad and bad.get("empty_caption", 0) + bad.get("caption_not_text", 0) == report.n_bad == report.rows:
        return f"{location}: the corpus has no captions (every row's caption is empty or not text); the audit needs image-caption pairs"
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "none"
    return f"{location}: no usable sample ({report.n_bad} bad rows: {reasons}); `steer data check` lists them"


class _Work:
    """The resumable work folder (see the module docstring)."""

    def __init__(self, root: Path, fingerprint: dict[str, Any], reader: Any, hidden: int) -> None:
        self.root = root
        key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        self.tracker = TopTokens(reader.n_latents, hidden, delta=reader.delta) if reader is not None else None
        self.results: list[SampleResult] = []
        self.thumbs: dict[int, tuple[float, str]] = {}
        if not self._resume(key):
            if root.exists():
                shutil.rmtree(root)
            root.mkdir(parents=True)
            write_text(root / META, json.dumps({"key": key, "fingerprint": fingerprint}, indent=1, default=str))
            if self.tracker is not None:
                self.tracker = TopTokens(reader.n_latents, hidden, delta=reader.delta)
        self._file = (root / SAMPLES).open("a", encoding="utf-8")

    def _resume(self, key: str) -> bool:
        try:
            meta = json.loads((self.root / META).read_text())
            if meta.get("key") != key or not (self.root / STATE).is_file():
                return False
            from safetensors import safe_open

            with safe_open(str(self.root / STATE), framework="pt") as f:
                info = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            lines = int(info["lines"])
            if self.tracker is not None:
                self.tracker.load(tensors)
            kept, size = [], 0
            with (self.root / SAMPLES).open("rb") as fh:
                for _ in range(lines):
                    raw = fh.readline()
                    if not raw.endswith(b"\n"):
                        return False
                    kept.append(SampleResult.from_json(json.loads(raw)))
                    size += len(raw)
            os.truncate(self.root / SAMPLES, size)  # drop lines written after the last saved state
            self.results = kept
            self.thumbs = {int(r): (float(m), b) for r, (m, b) in json.loads(info.get("thumbs", "{}")).items()}
            return True
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, RuntimeError):
            self.results, self.thumbs = [], {}
            return False

    def append(self, results: list[SampleResult]) -> None:
        for r in results:
            self._file.write(json.dumps(r.to_json()) + "\n")

    def save(self, lines: int, tracker: TopTokens | None, thumbs: dict[int, tuple[float, str]]) -> None:
        from safetensors.torch import save_file

        self._file.flush()
        os.fsync(self._file.fileno())
        tensors = tracker.state() if tracker is not None else {"none": torch.zeros(1)}
        tmp = self.root / f".{STATE}.tmp-{os.getpid()}"
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"lines": str(lines), "thumbs": json.dumps({str(r): [m, b] for r, (m, b) in thumbs.items()})})
            os.replace(tmp, self.root / STATE)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()

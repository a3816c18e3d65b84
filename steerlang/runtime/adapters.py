"""Model adapters: where a model family keeps its decoder layers, image tokens and patch grid.

The runtime never reaches into a model's attributes directly; it asks an adapter:

- `decoder_layers()`: the language model's blocks (layer L = the residual stream entering block L,
  0 = the LM input, n = the last block's output — the numbering of `steerlang.dictionary.harvest`);
  found at the family's known path, else by searching the module tree (an error if that is
  ambiguous);
- `hook_point(L)`: the module and whether to pre-hook it (L < n) or forward-hook it (L = n);
- `base_model()`: the module whose forward receives `input_ids` at every step (pre-hooked to see
  the ids, the cache length and the image grid of each forward call);
- `image_token_id`, `hidden_size`;
- `image_mask(ids)` and `patch_grid(kwargs, sample)`: which positions of a prefill hold image
  features, and how they lie on the image. `patch_grid` returns `(rows, cols)` for a sample whose
  image tokens are one row-major grid (LLaVA 1.5), or a `masks.ImageGrid` (a `(rows, cols)` tuple
  that also carries the sample's views — tiles, a global view, a base and a high-resolution view —
  and, where some image-token ids are not patches, each position's patch index).

`adapter_for(model)` picks the adapter by the model's class; `adapter_class_for(name)` does the
same from a class name (the loader checks a folder before loading weights). A family whose images
do not enter the residual stream as positions (Mllama: cross-attention) is refused with the reason.

Every adapter reads the call's inputs as transformers passes them to the base model: with
`pixel_values` (and `image_sizes` / `image_grid_thw`) on a plain forward, or with the vision
tower's output in `mm_encoder_outputs` inside `generate` (transformers >= 5 runs the tower before
the prefill and drops the pixel keys). Families whose layout depends on inputs that neither carries
assume one image per sample (what `ModelBundle.encode` builds); see docs/models.md.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor

from steerlang.errors import InputError, ModelLoadError, SteerError
from steerlang.runtime.masks import ImageGrid, View

__all__ = [
    "AyaVisionAdapter", "ChameleonAdapter", "Gemma3Adapter", "Idefics3Adapter", "InternVLAdapter", "LlavaAdapter",
    "LlavaNextAdapter", "Llama4Adapter", "Mistral3Adapter", "ModelAdapter", "PaliGemmaAdapter", "Qwen2VLAdapter", "Qwen3VLAdapter",
    "UNSUPPORTED", "adapter_class_for", "adapter_for", "config_image_token_id", "find_decoder_layers",
    "register_adapter", "supported_classes",
]

WHOLE = (0.0, 0.0, 1.0, 1.0)
_ROW_COL = re.compile(r"<row_(\d+)_col_(\d+)>")
_IMAGE_KINDS = ("all", "image", "image_region", "image_where")  # scopes that reach image positions
_VISION_WORDS = ("vision", "visual", "vqmodel", "image", "multi_modal_projector", "mm_projector", "connector", "audio")


def config_image_token_id(config: Any) -> int | None:
    """The id of the token whose embedding image features replace, from a model config.

    Configs spell it `image_token_id` (Qwen2-VL, Idefics3, InternVL), `image_token_index`
    (LLaVA, Gemma3, PaliGemma, Mistral3, AyaVision; most map one to the other), or keep it in
    `vocabulary_map["<image>"]` (Chameleon); some keep it on the text config."""
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        for key in ("image_token_id", "image_token_index"):
            v = getattr(cfg, key, None)
            if isinstance(v, int):
                return v
        vm = getattr(cfg, "vocabulary_map", None)
        if isinstance(vm, dict) and isinstance(vm.get("<image>"), int):
            return int(vm["<image>"])
    return None


def _get(module: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _text_layer_count(model: torch.nn.Module) -> int | None:
    cfg = model.config
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else getattr(cfg, "text_config", cfg)
    n = getattr(text, "num_hidden_layers", None)
    return int(n) if isinstance(n, int) else None


def find_decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """(path, ModuleList) of the text model's decoder blocks, by searching the module tree.

    Candidates are ModuleLists outside the vision side (no path part naming vision, visual,
    vqmodel, image, projector) whose length is the text config's `num_hidden_layers`; exactly one
    must remain, else ModelLoadError names them."""
    n = _text_layer_count(model)
    found = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        if any(w in part.lower() for part in name.split(".") for w in _VISION_WORDS):
            continue
        if n is not None and len(mod) != n:
            continue
        if len({type(m) for m in mod}) > 2:  # decoder blocks are one class (two for hybrids at most)
            continue
        found.append((name, mod))
    if len(found) == 1:
        return found[0]
    what = ", ".join(f"{p} ({len(m)})" for p, m in found) or "none"
    raise ModelLoadError(f"cannot tell where {type(model).__name__} keeps its text decoder layers "
                         f"(num_hidden_layers={n}); candidates: {what}")


class ModelAdapter:
    """The generic interface; subclasses say where a family keeps its parts."""

    family = "generic"
    label = "generic"  # the family's name in messages and docs/models.md
    layer_paths: tuple[str, ...] = ("model.language_model.layers",)
    base_path = "model"
    tiled = False  # whether one image's tokens can span several grids (tiles, views)

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._layers: torch.nn.ModuleList | None = None
        self._layers_path: str | None = None
        self._ids: Tensor | None = None  # the prefill ids seen by image_mask (patch_grid may not get them)
        self._grids: tuple[Any, Any, list] | None = None  # (kwargs, ids, per-sample grids) of the last call
        # The processor's tokenizer, where the session has one: some families mark a tile's place in
        # the image with tokens (Idefics3's `<row_i_col_j>`) whose ids only the tokenizer knows.
        self.tokenizer: Any = None
        # The processor, and the (height, width) of each sample's image in the call about to run, where
        # the session knows them: families whose processor picks a tiling from the image's size
        # (InternVL, AyaVision) place their tiles with them.
        self.processor: Any = None
        self.image_sizes: list[tuple[int, int]] | None = None

    # -- parts ------------------------------------------------------------------------------
    def base_model(self) -> torch.nn.Module:
        """The module called with `input_ids` on every forward step (holds vision + LM)."""
        base = _get(self.model, self.base_path)
        if base is None:
            raise ModelLoadError(f"{type(self.model).__name__} has no {self.base_path!r} submodule ({self.label} adapter)")
        return base  # type: ignore[no-any-return]

    def decoder_layers(self) -> torch.nn.ModuleList:
        if self._layers is None:
            n = _text_layer_count(self.model)
            for path in self.layer_paths:
                mod = _get(self.model, path)
                if isinstance(mod, torch.nn.ModuleList) and (n is None or len(mod) == n):
                    self._layers, self._layers_path = mod, path
                    break
            else:
                self._layers_path, self._layers = find_decoder_layers(self.model)
        return self._layers

    @property
    def layers_path(self) -> str:
        """Dotted path of the decoder blocks from the top model (e.g. "model.text_model.layers")."""
        self.decoder_layers()
        assert self._layers_path is not None
        return self._layers_path

    def language_model(self) -> torch.nn.Module:
        """The text model that owns the decoder blocks."""
        parent = self.layers_path.rpartition(".")[0]
        return _get(self.model, parent) if parent else self.model  # type: ignore[no-any-return]

    @property
    def n_layers(self) -> int:
        return len(self.decoder_layers())

    @property
    def text_config(self) -> Any:
        cfg = self.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else getattr(cfg, "text_config", cfg)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def image_token_id(self) -> int:
        tid = config_image_token_id(self.model.config)
        if tid is None:
            raise ModelLoadError(f"{type(self.model).__name__}'s config names no image token (image_token_id / image_token_index)")
        return tid

    def hook_point(self, layer: int) -> tuple[torch.nn.Module, bool]:
        """(module, is_pre): layer L < n is the input of block L (pre-hook); L = n the last output."""
        blocks = self.decoder_layers()
        if not 0 <= layer <= len(blocks):
            raise InputError(f"layer {layer} is out of range: this model has layers 0 (LM input) to {len(blocks)} (last block's output)")
        return (blocks[layer], True) if layer < len(blocks) else (blocks[-1], False)

    def edit_notes(self, edits: list[tuple[str, tuple[int, ...]]]) -> list[str]:
        """Warnings about (scope kind, layers) edits this family does not carry out as written."""
        return []

    # -- positions --------------------------------------------------------------------------
    def image_mask(self, input_ids: Tensor) -> Tensor:
        """[B, T] bool: the positions holding the image token id at a prefill (a superset of the
        image positions where a family also gives non-patch rows that id; `patch_grid` then says
        which positions are not patches)."""
        self._ids, self._grids = input_ids, None
        return input_ids == self.image_token_id

    def patch_grid(self, kwargs: dict[str, Any], sample: int) -> tuple[int, int]:
        """(rows, cols) or an `ImageGrid` for sample `sample`, from the base model's forward kwargs.

        The ids are `kwargs["input_ids"]`, else those last given to `image_mask` (some families
        pass the ids positionally). Computed once per call for the whole batch."""
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = self._ids
        cached = self._grids
        if cached is None or cached[0] is not kwargs or cached[1] is not ids:
            if ids is None:
                raise SteerError(f"{self.label}: the image layout needs the prompt's input_ids")
            cached = self._grids = (kwargs, ids, self.grids(ids, kwargs))
        return cached[2][sample]  # type: ignore[no-any-return]

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        """Per sample: (rows, cols), an ImageGrid, or (0, 0) without image tokens."""
        raise NotImplementedError

    def fixed_grid(self) -> tuple[int, int]:
        """The (rows, cols) every image of this model gets, for code that needs one grid per model
        (dictionary backgrounds, harvest metadata); InputError where it varies with the image."""
        raise InputError(f"{self.label} has no fixed patch grid: it depends on each image's size"
                         f"{' and on how it is split into tiles' if self.tiled else ''}")

    # -- helpers ------------------------------------------------------------------------------
    def _mask(self, ids: Tensor) -> Tensor:
        return (ids == self.image_token_id).cpu()


# ---------------------------------------------------------------------------------------------
# helpers for the families


def _runs(row: Tensor) -> list[tuple[int, int]]:
    """[(start, end)] of the runs of True in a 1-D bool tensor (end exclusive)."""
    idx = row.nonzero().flatten().tolist()
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _square(n: int, what: str) -> int:
    s = math.isqrt(n)
    if s * s != n:
        raise SteerError(f"{what}: {n} tokens per image grid is not a square")
    return s


def _size(v: Any) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def _image_outputs(kwargs: dict[str, Any]) -> Any:
    mm = kwargs.get("mm_encoder_outputs")
    return mm.get("image") if isinstance(mm, dict) else None


def _per_image_counts(kwargs: dict[str, Any]) -> list[int] | None:
    """Feature rows per image from the vision tower's output when `generate` passed it as a list."""
    out = _image_outputs(kwargs)
    feats = getattr(out, "pooler_output", None) if out is not None else None
    if isinstance(feats, (list, tuple)):
        return [int(f.shape[0]) for f in feats]
    return None


def _split_by_counts(mask: Tensor, counts: list[int], what: str) -> list[list[Tensor]]:
    """Per sample, the position tensors of each image, images taken in batch order."""
    out: list[list[Tensor]] = []
    k = 0
    for b in range(mask.shape[0]):
        pos = mask[b].nonzero().flatten()
        imgs, at = [], 0
        while at < len(pos):
            if k >= len(counts):
                raise SteerError(f"{what}: more image tokens than image features")
            imgs.append(pos[at : at + counts[k]])
            at += counts[k]
            k += 1
        out.append(imgs)
    return out


def _grid_of(views: list[View], positions: Tensor, order: list[int], length: int, family: str) -> ImageGrid:
    """An ImageGrid whose patch indices follow `views` (primary first): `positions[j]` holds patch
    `order[j]` (-1: an image-token position that is not a patch)."""
    patch = torch.full((length,), -1, dtype=torch.long)
    patch[positions] = torch.tensor(order, dtype=torch.long)
    return ImageGrid(views, patch=patch, family=family)


def _plain_or_views(images: list[tuple[int, int]], family: str) -> Any:
    """(rows, cols) for one single-grid image; an ImageGrid with one view per image otherwise."""
    if not images:
        return (0, 0)
    if len(images) == 1:
        return images[0]
    views, start = [], 0
    for i, (r, c) in enumerate(images):
        views.append(View(start, r, c, WHOLE, f"image {i + 1}"))
        start += r * c
    return ImageGrid(views, family=family)


# ---------------------------------------------------------------------------------------------
# families


class LlavaAdapter(ModelAdapter):
    """LLaVA 1.5 style: one fixed grid (image_size // patch_size squared), CLS dropped."""

    family = "llava"
    label = "LLaVA"

    def patch_grid(self, kwargs: dict[str, Any], sample: int) -> tuple[int, int]:
        return self.fixed_grid()

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        return [self.fixed_grid()] * input_ids.shape[0]

    def fixed_grid(self) -> tuple[int, int]:
        vc = self.model.config.vision_config
        g = _size(vc.image_size) // _size(vc.patch_size)
        return g, g


class _RunsOfFixedGrid(ModelAdapter):
    """Families whose every image is `n` consecutive image tokens on one square grid."""

    def tokens_per_image(self) -> int:
        raise NotImplementedError

    def fixed_grid(self) -> tuple[int, int]:
        s = _square(self.tokens_per_image(), self.label)
        return s, s

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        mask = self._mask(input_ids)
        n = self.tokens_per_image()
        g = self.fixed_grid()
        out = []
        for b in range(mask.shape[0]):
            count = int(mask[b].sum())
            if count % n:
                raise SteerError(f"{self.label}: {count} image tokens in sample {b} is not a multiple of {n} per image")
            out.append(_plain_or_views([g] * (count // n), self.label))
        return out


class Gemma3Adapter(_RunsOfFixedGrid):
    """Gemma 3: `mm_tokens_per_image` soft tokens (`image_token_index`) between <start_of_image> and
    <end_of_image>, pooled to a square grid. (Pan-and-scan crops count as further images.)"""

    family = "gemma3"
    label = "Gemma3"

    def tokens_per_image(self) -> int:
        return int(self.model.config.mm_tokens_per_image)


class PaliGemmaAdapter(_RunsOfFixedGrid):
    """PaliGemma: (image_size // patch_size)^2 image tokens placed before <bos>."""

    family = "paligemma"
    label = "PaliGemma"

    def tokens_per_image(self) -> int:
        vc = self.model.config.vision_config
        return (_size(vc.image_size) // _size(vc.patch_size)) ** 2


class ChameleonAdapter(_RunsOfFixedGrid):
    """Chameleon: the VQ-VAE's codes as token embeddings at the `<image>` placeholders; one model
    (`model.model.layers`), no sub-configs."""

    family = "chameleon"
    label = "Chameleon"
    layer_paths = ("model.layers",)

    def tokens_per_image(self) -> int:
        vq = self.model.config.vq_config
        side = int(vq.resolution) // 2 ** (len(vq.channel_multiplier) - 1)
        return side * side


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL: each image's grid is `image_grid_thw` / `spatial_merge_size`
    (2x2 patches merged per token), read from `image_grid_thw` on a plain forward, or from the
    M-RoPE position ids (t, h, w per token) that `generate` passes instead."""

    family = "qwen2_vl"
    label = "Qwen2-VL"

    def _merge(self) -> int:
        return int(getattr(self.model.config.vision_config, "spatial_merge_size", 2))

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        mask = self._mask(input_ids)
        thw = kwargs.get("image_grid_thw")
        pids = kwargs.get("position_ids")
        runs = [_runs(mask[b]) for b in range(mask.shape[0])]
        out: list[Any] = []
        if thw is not None:
            merge, k = self._merge(), 0
            for rs in runs:
                imgs = []
                for s, e in rs:
                    if k >= len(thw):
                        raise SteerError(f"{self.label}: more images in the ids than rows in image_grid_thw")
                    t, h, w = (int(x) for x in thw[k])
                    k += 1
                    if t * (h // merge) * (w // merge) != e - s:
                        raise SteerError(f"{self.label}: image {k} of the batch has {e - s} tokens but image_grid_thw says {t}x{h}x{w}")
                    imgs.append((h // merge, w // merge))
                out.append(_plain_or_views(imgs, self.label))
            return out
        if isinstance(pids, Tensor) and pids.dim() == 3 and pids.shape[0] >= 3:
            hw = pids[-2:].cpu()  # (h, w) rotary positions of every token: [2, B, T]
            for b, rs in enumerate(runs):
                imgs = []
                for s, e in rs:
                    h, w = hw[0, b, s:e], hw[1, b, s:e]
                    rows, cols = int(h.max() - h.min()) + 1, int(w.max() - w.min()) + 1
                    if rows * cols != e - s:
                        raise SteerError(f"{self.label}: cannot read an image grid from the M-RoPE positions")
                    imgs.append((rows, cols))
                out.append(_plain_or_views(imgs, self.label))
            return out
        raise SteerError(f"{self.label}: the image grid is unknown (neither image_grid_thw nor 3-D position_ids in the call)")


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: Qwen2-VL's layout (merged patches, `image_grid_thw` / M-RoPE positions), plus
    DeepStack: the features of some vision blocks are added again to the image positions after
    text blocks 0 .. k-1 (k = `len(vision_config.deepstack_visual_indexes)`). Layer L (the input of
    block L) sees every injection made before it; an image edit at a layer L < k is followed by the
    injections after blocks L .. k-1, which put back part of what a concept's visual evidence carries
    (`reinjected_after`)."""

    family = "qwen3_vl"
    label = "Qwen3-VL"

    @property
    def deepstack_layers(self) -> int:
        """k: vision features are added to the image positions after text blocks 0 .. k-1."""
        idx = getattr(self.model.config.vision_config, "deepstack_visual_indexes", None)
        if idx is None:
            raise ModelLoadError(f"{type(self.model).__name__}'s vision config has no deepstack_visual_indexes: "
                                 "cannot tell where vision features re-enter the language model")
        return len(idx)

    def reinjected_after(self, layer: int) -> list[int]:
        """The blocks after which vision features are added to the image positions again, for an
        image edit made at `layer` (empty: the edit is the last word on those positions' inputs)."""
        return list(range(layer, self.deepstack_layers))

    def edit_notes(self, edits: list[tuple[str, tuple[int, ...]]]) -> list[str]:
        k = self.deepstack_layers
        early = sorted({L for kind, layers in edits if kind in _IMAGE_KINDS for L in layers if L < k})
        if not early:
            return []
        blocks = "block 0" if k == 1 else f"blocks 0..{k - 1}"
        return [f"{self.label} adds vision features to the image positions again after {blocks} (DeepStack): "
                f"an image edit at layer{'s' if len(early) > 1 else ''} {', '.join(map(str, early))} is followed by "
                f"those re-injections and partly undone; edit at layer {k} or later for an edit that stays"]


class Mistral3Adapter(ModelAdapter):
    """Mistral3 / Pixtral: each image row is a run of [IMG] tokens ended by [IMG_BREAK] ([IMG_END]
    after the last row); the grid is (runs, run length). Images are told apart by their feature
    counts (`image_sizes` on a plain forward, the tower's per-image output in generate)."""

    family = "mistral3"
    label = "Mistral3"

    def _counts(self, kwargs: dict[str, Any]) -> list[int] | None:
        counts = _per_image_counts(kwargs)
        if counts is not None:
            return counts
        sizes = kwargs.get("image_sizes")
        if sizes is None:
            return None
        cfg = self.model.config
        step = _size(cfg.vision_config.patch_size) * int(getattr(cfg, "spatial_merge_size", 1))
        return [(int(h) // step) * (int(w) // step) for h, w in sizes.tolist()]

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        mask = self._mask(input_ids)
        counts = self._counts(kwargs)
        per_sample = (_split_by_counts(mask, counts, self.label) if counts is not None
                      else [[mask[b].nonzero().flatten()] if bool(mask[b].any()) else [] for b in range(mask.shape[0])])
        out = []
        for imgs in per_sample:
            shapes = []
            for pos in imgs:
                row = torch.zeros(int(pos.max()) + 1, dtype=torch.bool)
                row[pos] = True
                lens = {e - s for s, e in _runs(row)}
                if len(lens) != 1:
                    raise SteerError(f"{self.label}: an image's rows have different lengths {sorted(lens)}")
                cols = lens.pop()
                shapes.append((len(pos) // cols, cols))
            out.append(_plain_or_views(shapes, self.label))
        return out


class LlavaNextAdapter(ModelAdapter):
    """LLaVA-NeXT / LLaVA-OneVision: per image a base view (the whole image resized, g x g) then a
    high-resolution view (the tiles merged and unpadded), each row of which ends with an
    `image_newline` that carries the same `<image>` id but no pixel: those positions are not patches
    (kind PAD). Both views cover the whole image. The layout is read from the packed features:
    the tower's output in generate, else computed here from `pixel_values` and `image_sizes`."""

    family = "llava_next"
    label = "LLaVA-NeXT"
    tiled = True

    def _features(self, kwargs: dict[str, Any]) -> list[Tensor]:
        out = _image_outputs(kwargs)
        if out is None and kwargs.get("pixel_values") is not None:
            base = self.base_model()
            extra = {k: kwargs[k] for k in ("vision_feature_layer", "vision_feature_select_strategy", "vision_aspect_ratio",
                                            "batch_num_images") if kwargs.get(k) is not None}
            with torch.no_grad():
                out = base.get_image_features(kwargs["pixel_values"], kwargs["image_sizes"], return_dict=True, **extra)
        feats = getattr(out, "pooler_output", None) if out is not None else None
        if feats is None:
            raise SteerError(f"{self.label}: the image layout needs the images (pixel_values and image_sizes, or the vision tower's output)")
        return list(feats) if isinstance(feats, (list, tuple)) else list(feats.unbind(0))

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        mask = self._mask(input_ids)
        if not bool(mask.any()):
            return [(0, 0)] * mask.shape[0]
        feats = self._features(kwargs)
        newline = self.base_model().image_newline.detach()
        vc = self.model.config.vision_config
        g = _size(vc.image_size) // _size(vc.patch_size)
        per_sample = _split_by_counts(mask, [int(f.shape[0]) for f in feats], self.label)
        out: list[Any] = []
        k = 0
        for pos_list in per_sample:
            if not pos_list:
                out.append((0, 0))
                continue
            views: list[View] = []
            order: list[int] = []
            start = 0
            for n_img in range(len(pos_list)):
                f = feats[k]
                k += 1
                is_nl = (f == newline.to(f.device, f.dtype)).all(dim=-1).cpu()
                base_len = g * g
                hr_nl = is_nl[base_len:]
                n_rows, hr_len = int(hr_nl.sum()), len(hr_nl)
                if bool(is_nl[:base_len].any()) or (hr_len and not bool(hr_nl[-1])):
                    raise SteerError(f"{self.label}: cannot read the image layout from its features")
                suffix = f" {n_img + 1}" if len(pos_list) > 1 else ""
                views.append(View(start, g, g, WHOLE, f"base{suffix}"))
                cols = (hr_len - n_rows) // n_rows if n_rows else 0
                if cols:  # the high-resolution view: rows of `cols` patches, each ended by a newline
                    if n_rows * (cols + 1) != hr_len:
                        raise SteerError(f"{self.label}: the high-resolution view's rows have different lengths")
                    views.append(View(start + base_len, n_rows, cols, WHOLE, f"high-res{suffix}"))
                nums = torch.full((len(f),), -1, dtype=torch.long)
                n_patches = int((~is_nl).sum())
                nums[~is_nl] = torch.arange(start, start + n_patches)
                order += nums.tolist()
                start += n_patches
            out.append(_grid_of(views, torch.cat(pos_list), order, mask.shape[1], self.label))
        return out


class _TiledAdapter(ModelAdapter):
    """Families that cut an image into tiles of `n` tokens each plus a global view, in that order
    (Idefics3/SmolVLM, InternVL, AyaVision). Each tile is its own grid (closing happens per tile);
    patch numbers put the global view first. A tile's box is known where the family marks it in the
    ids (`tile_boxes`); elsewhere only the global view has one. One image per sample."""

    tiled = True

    def tokens_per_tile(self) -> int:
        raise NotImplementedError

    def tile_arrangement(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """(rows, cols) of the tiles the processor cuts an image of `size` (height, width) into, tiles
        in row-major order; None when unknown."""
        return None

    def tile_boxes(self, ids: Tensor, starts: list[int], sample: int) -> list[tuple[float, float, float, float] | None]:
        """Each tile's place in the image, for sample `sample` (its ids and each tile's first position):
        from the image's size and `tile_arrangement` where both are known and agree with the number of
        tiles in the ids; None (unknown) otherwise."""
        sizes = self.image_sizes
        arrangement = self.tile_arrangement(sizes[sample]) if sizes is not None and sample < len(sizes) else None
        if arrangement is None or arrangement[0] * arrangement[1] != len(starts):
            return [None] * len(starts)
        rows, cols = arrangement
        return [((t // cols) / rows, (t % cols) / cols, (t // cols + 1) / rows, (t % cols + 1) / cols) for t in range(len(starts))]

    def grids(self, input_ids: Tensor, kwargs: dict[str, Any]) -> list[Any]:
        mask = self._mask(input_ids)
        n = self.tokens_per_tile()
        s = _square(n, self.label)
        out: list[Any] = []
        for b in range(mask.shape[0]):
            pos = mask[b].nonzero().flatten()
            if not len(pos):
                out.append((0, 0))
                continue
            if len(pos) % n:
                raise SteerError(f"{self.label}: {len(pos)} image tokens in sample {b} is not a multiple of {n} per tile")
            tiles = len(pos) // n
            if tiles == 1:
                out.append((s, s))
                continue
            boxes = self.tile_boxes(input_ids[b].cpu(), [int(pos[n * t]) for t in range(tiles - 1)], b)
            views = [View(0, s, s, WHOLE, "global")]
            views += [View(n * (t + 1), s, s, boxes[t], f"tile {t + 1}") for t in range(tiles - 1)]
            # In the sequence the tiles come first and the global view last; number the global view first.
            order = [n + j for j in range(n * (tiles - 1))] + list(range(n))
            out.append(_grid_of(views, pos, order, mask.shape[1], self.label))
        return out


class Idefics3Adapter(_TiledAdapter):
    """Idefics3 / SmolVLM: the text model is `model.text_model`; an image is its tiles
    (`<row_i_col_j>` then `image_seq_len` `<image>` tokens each) then the global image."""

    family = "idefics3"
    label = "Idefics3"
    layer_paths = ("model.text_model.layers",)

    def tokens_per_tile(self) -> int:
        cfg = self.model.config
        side = _size(cfg.vision_config.image_size) // _size(cfg.vision_config.patch_size)
        return (side // int(cfg.scale_factor)) ** 2

    def _row_col_ids(self) -> dict[int, tuple[int, int]]:
        """id -> (row, col) of the `<row_i_col_j>` tokens (1-based), from the tokenizer's vocabulary."""
        if self.tokenizer is None:
            return {}
        cached = getattr(self, "_rc", None)
        if cached is None or cached[0] is not self.tokenizer:
            found = {}
            for tok, i in self.tokenizer.get_vocab().items():
                m = _ROW_COL.fullmatch(tok)
                if m:
                    found[int(i)] = (int(m.group(1)), int(m.group(2)))
            self._rc = cached = (self.tokenizer, found)
        return cached[1]

    def tile_boxes(self, ids: Tensor, starts: list[int], sample: int) -> list[tuple[float, float, float, float] | None]:
        """The processor resizes the image to whole tiles and writes `<row_i_col_j>` before tile (i, j):
        tile (i, j) of an R x C split covers rows (i-1)/R .. i/R and columns (j-1)/C .. j/C."""
        rc = self._row_col_ids()
        places = [rc.get(int(ids[s - 1])) if s > 0 else None for s in starts]
        if not places or any(p is None for p in places):
            return [None] * len(starts)
        rows, cols = max(p[0] for p in places), max(p[1] for p in places)  # type: ignore[index]
        if sorted(places) != [(i, j) for i in range(1, rows + 1) for j in range(1, cols + 1)]:
            return [None] * len(starts)  # not one whole R x C split: do not guess
        return [((i - 1) / rows, (j - 1) / cols, i / rows, j / cols) for i, j in places]  # type: ignore[misc]


def _got_ocr2_tiling(processor: Any, size: tuple[int, int]) -> tuple[int, int] | None:
    """(rows, cols) of the tiles a GotOcr2-style image processor (InternVL's, AyaVision's) cuts an
    image of `size` into: the canvas that the processor's own module (PIL or torchvision backend)
    picks with `get_optimal_tiled_canvas` from its `min_patches`, `max_patches` and tile `size`,
    checked against the processor's public tile count. None where the processor does not tile, or
    transformers no longer has that function or it disagrees (regions then refuse, never guess)."""
    import sys

    ip = getattr(processor, "image_processor", None)
    if ip is None or not getattr(ip, "crop_to_patches", False) or int(getattr(ip, "max_patches", 1)) <= 1:
        return None
    canvas = getattr(sys.modules.get(type(ip).__module__), "get_optimal_tiled_canvas", None)
    tile = getattr(ip, "size", None)
    th, tw = (tile.get("height"), tile.get("width")) if isinstance(tile, dict) else (getattr(tile, "height", None), getattr(tile, "width", None))
    if canvas is None or th is None or tw is None:
        return None
    cols, rows = (int(v) for v in canvas(size, (th, tw), int(ip.min_patches), int(ip.max_patches)))
    count = getattr(ip, "get_number_of_image_patches", None)
    if count is not None and int(count(*size)) != (1 + rows * cols if rows * cols > 1 else 1):
        return None
    return rows, cols


class InternVLAdapter(_TiledAdapter):
    """InternVL: `<img>`, `image_seq_length` `<IMG_CONTEXT>` tokens per tile, `</img>`; with more
    than one tile the last is the global thumbnail."""

    family = "internvl"
    label = "InternVL"

    def tokens_per_tile(self) -> int:
        return int(self.model.config.image_seq_length)

    def tile_arrangement(self, size: tuple[int, int]) -> tuple[int, int] | None:
        return _got_ocr2_tiling(self.processor, size)


class AyaVisionAdapter(_TiledAdapter):
    """AyaVision: `TILE_k` then the tile's `<|IMG_PATCH|>` tokens for each tile, then `TILE_GLOBAL`
    and the global view."""

    family = "aya_vision"
    label = "AyaVision"

    def tokens_per_tile(self) -> int:
        cfg = self.model.config
        side = _size(cfg.vision_config.image_size) // _size(cfg.vision_config.patch_size)
        return (side // int(cfg.downsample_factor)) ** 2

    def tile_arrangement(self, size: tuple[int, int]) -> tuple[int, int] | None:
        return _got_ocr2_tiling(self.processor, size)


class Llama4Adapter(_TiledAdapter):
    """Llama 4: the language model is a full causal LM at `language_model` (blocks at
    `language_model.model.layers`); the top model is what receives `input_ids`."""

    family = "llama4"
    label = "Llama4"
    layer_paths = ("language_model.model.layers", "model.language_model.layers")
    base_path = ""

    def tokens_per_tile(self) -> int:
        vc = self.model.config.vision_config
        side = _size(vc.image_size) // _size(vc.patch_size)
        ratio = float(getattr(vc, "pixel_shuffle_ratio", 0.5))
        return int(side * side * ratio * ratio)


# Classes whose images never become positions of the residual stream: named with the reason.
UNSUPPORTED: dict[str, str] = {
    "MllamaForConditionalGeneration": "its images enter the language model by cross-attention, not as positions of the "
                                      "residual stream, so there are no image positions to steer",
}

_ADAPTERS: dict[str, type[ModelAdapter]] = {
    "LlavaForConditionalGeneration": LlavaAdapter,
    "LlavaNextForConditionalGeneration": LlavaNextAdapter,
    "LlavaOnevisionForConditionalGeneration": LlavaNextAdapter,
    "Qwen2VLForConditionalGeneration": Qwen2VLAdapter,
    "Qwen2_5_VLForConditionalGeneration": Qwen2VLAdapter,
    "Qwen3VLForConditionalGeneration": Qwen3VLAdapter,
    "Gemma3ForConditionalGeneration": Gemma3Adapter,
    "PaliGemmaForConditionalGeneration": PaliGemmaAdapter,
    "Idefics3ForConditionalGeneration": Idefics3Adapter,
    "SmolVLMForConditionalGeneration": Idefics3Adapter,
    "Mistral3ForConditionalGeneration": Mistral3Adapter,
    "InternVLForConditionalGeneration": InternVLAdapter,
    "AyaVisionForConditionalGeneration": AyaVisionAdapter,
    "ChameleonForConditionalGeneration": ChameleonAdapter,
    "Llama4ForConditionalGeneration": Llama4Adapter,
}


def register_adapter(class_name: str, adapter: type[ModelAdapter]) -> None:
    """Register an adapter for a model class name (refuses to replace an existing one)."""
    if class_name in _ADAPTERS:
        raise ValueError(f"an adapter for {class_name} is already registered")
    _ADAPTERS[class_name] = adapter


def supported_classes() -> list[str]:
    """The model class names steerlang has an adapter for, sorted."""
    return sorted(_ADAPTERS)


def adapter_class_for(class_names: str | list[str]) -> type[ModelAdapter]:
    """The adapter class for a model class name (or a class's MRO names, most derived first);
    ModelLoadError naming the class and the supported list, or why a family is refused."""
    names = [class_names] if isinstance(class_names, str) else list(class_names)
    for name in names:
        if name in UNSUPPORTED:
            raise ModelLoadError(f"{name} is not supported: {UNSUPPORTED[name]}")
        if name in _ADAPTERS:
            return _ADAPTERS[name]
    raise ModelLoadError(f"no steering adapter for {names[0] if names else '?'}; supported: {', '.join(supported_classes())}")


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    """The adapter for `model`'s family; ModelLoadError for a family steerlang cannot steer."""
    return adapter_class_for([c.__name__ for c in type(model).__mro__])(model)

"""Model adapters: where a model family keeps its decoder layers, image tokens and patch grid.

The runtime never reaches into a model's attributes directly; it asks an adapter:

- `decoder_layers()`: the language model's blocks (layer L = the residual stream entering block L,
  0 = the LM input, n = the last block's output — the numbering of `steerlang.dictionary.harvest`);
- `hook_point(L)`: the module and whether to pre-hook it (L < n) or forward-hook it (L = n);
- `base_model()`: the module whose forward receives `input_ids` at every step (pre-hooked to see
  the ids, the cache length and the image grid of each forward call);
- `image_token_id`, `hidden_size`, and `patch_grid(kwargs, sample)`: rows x cols of one sample's
  image tokens (the patch index of an image token is its order among the sample's image tokens,
  row-major).

`adapter_for(model)` picks the adapter by the model's class. Two families are provided: LLaVA
(the toy model) and Qwen2-VL (a per-image grid from `image_grid_thw`, 2x2 patches merged per token).
"""

from __future__ import annotations

from typing import Any

import torch

from steerlang.errors import InputError, ModelLoadError

__all__ = ["LlavaAdapter", "ModelAdapter", "Qwen2VLAdapter", "adapter_for", "register_adapter"]


class ModelAdapter:
    """The generic interface; subclasses say where a family keeps its parts."""

    family = "generic"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    # -- parts ------------------------------------------------------------------------------
    def base_model(self) -> torch.nn.Module:
        """The module called with `input_ids` on every forward step (holds vision + LM)."""
        return self.model.model  # type: ignore[return-value]

    def language_model(self) -> torch.nn.Module:
        return self.base_model().language_model  # type: ignore[return-value]

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.language_model().layers  # type: ignore[return-value]

    @property
    def n_layers(self) -> int:
        return len(self.decoder_layers())

    @property
    def text_config(self) -> Any:
        cfg = self.model.config
        return getattr(cfg, "text_config", cfg)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    def hook_point(self, layer: int) -> tuple[torch.nn.Module, bool]:
        """(module, is_pre): layer L < n is the input of block L (pre-hook); L = n the last output."""
        blocks = self.decoder_layers()
        if not 0 <= layer <= len(blocks):
            raise InputError(f"layer {layer} is out of range: this model has layers 0 (LM input) to {len(blocks)} (last block's output)")
        return (blocks[layer], True) if layer < len(blocks) else (blocks[-1], False)

    # -- positions --------------------------------------------------------------------------
    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: the image-token positions (found at prefill from the ids)."""
        return input_ids == self.image_token_id

    def patch_grid(self, kwargs: dict[str, Any], sample: int) -> tuple[int, int]:
        """(rows, cols) of sample `sample`'s image tokens, from the base model's forward kwargs."""
        raise NotImplementedError


class LlavaAdapter(ModelAdapter):
    """LLaVA 1.5 style: one fixed grid (image_size // patch_size squared), CLS dropped."""

    family = "llava"

    def patch_grid(self, kwargs: dict[str, Any], sample: int) -> tuple[int, int]:
        vc = self.model.config.vision_config
        g = int(vc.image_size) // int(vc.patch_size)
        return g, g


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL: each image's grid is `image_grid_thw` / `spatial_merge_size`."""

    family = "qwen2_vl"

    def patch_grid(self, kwargs: dict[str, Any], sample: int) -> tuple[int, int]:
        thw = kwargs.get("image_grid_thw")
        if thw is None:
            # `generate` runs the vision tower itself and does not pass the grid on to the base
            # model: recover it from the sample's image-token count (the most square factorisation).
            ids = kwargs.get("input_ids")
            n = int((ids[sample] == self.image_token_id).sum()) if ids is not None else 0
            return _squarest(n)
        merge = int(getattr(self.model.config.vision_config, "spatial_merge_size", 2))
        # One image per sample in steerlang's runs: row `sample` of image_grid_thw.
        _t, h, w = (int(x) for x in thw[min(sample, len(thw) - 1)])
        return h // merge, w // merge


def _squarest(n: int) -> tuple[int, int]:
    """(rows, cols), rows <= cols, rows * cols = n, as square as possible."""
    rows = max((r for r in range(1, int(n**0.5) + 1) if n % r == 0), default=0)
    return (rows, n // rows) if rows else (0, 0)


_ADAPTERS: dict[str, type[ModelAdapter]] = {
    "LlavaForConditionalGeneration": LlavaAdapter,
    "Qwen2VLForConditionalGeneration": Qwen2VLAdapter,
    "Qwen2_5_VLForConditionalGeneration": Qwen2VLAdapter,
}


def register_adapter(class_name: str, adapter: type[ModelAdapter]) -> None:
    """Register an adapter for a model class name (refuses to replace an existing one)."""
    if class_name in _ADAPTERS:
        raise ValueError(f"an adapter for {class_name} is already registered")
    _ADAPTERS[class_name] = adapter


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    """The adapter for `model`'s family; ModelLoadError for a family steerlang cannot steer."""
    for cls in type(model).__mro__:
        if cls.__name__ in _ADAPTERS:
            return _ADAPTERS[cls.__name__](model)
    known = ", ".join(sorted(_ADAPTERS))
    raise ModelLoadError(f"no steering adapter for {type(model).__name__}; supported: {known}")

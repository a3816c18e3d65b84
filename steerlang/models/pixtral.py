"""Pixtral's processor (Mistral 3) without torchvision.

transformers' `PixtralProcessor` module imports torchvision, whose PyPI wheels do not load beside a
CPU-only torch. Its work is small: the PIL image processor resizes each image to whole patches,
and each `[IMG]` in the text becomes the image's rows of `[IMG]` tokens, each row ended by
`[IMG_BREAK]` and the last by `[IMG_END]`. This class does the same with the PIL image processor and
the tokenizer, so the full processor stays the path for users who have torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PixtralPilProcessor"]


class PixtralPilProcessor:
    """`processor(images=..., text=..., return_tensors="pt", padding=True)` as `PixtralProcessor`
    answers it: `input_ids`, `attention_mask`, `pixel_values`, `image_sizes`."""

    def __init__(self, image_processor: Any, tokenizer: Any, *, patch_size: int = 16, spatial_merge_size: int = 1,
                 image_token: str = "[IMG]", image_break_token: str = "[IMG_BREAK]", image_end_token: str = "[IMG_END]",
                 chat_template: str | None = None) -> None:
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.patch_size, self.spatial_merge_size = int(patch_size), int(spatial_merge_size)
        self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)

    @classmethod
    def from_folder(cls, src: str, image_processor: Any, tokenizer: Any) -> PixtralPilProcessor:
        """The settings of `src`'s processor_config.json (when it has one) around the given parts."""
        from transformers.utils import cached_file

        try:
            cfg = cached_file(src, "processor_config.json", _raise_exceptions_for_missing_entries=False)
        except OSError:
            cfg = None
        keys = ("patch_size", "spatial_merge_size", "image_token", "image_break_token", "image_end_token", "chat_template")
        extra = {k: v for k, v in json.loads(Path(cfg).read_text()).items() if k in keys} if cfg else {}
        return cls(image_processor, tokenizer, **extra)

    def image_tokens(self, height: int, width: int) -> str:
        """The text an image of (height, width) pixels (already resized) stands for."""
        step = self.patch_size * self.spatial_merge_size
        rows, cols = height // step, width // step
        if rows < 1 or cols < 1:
            raise ValueError(f"an image of {height}x{width} pixels has no {step}x{step} patch")
        return (self.image_token * cols + self.image_break_token) * (rows - 1) + self.image_token * cols + self.image_end_token

    def __call__(self, images: Any = None, text: Any = None, return_tensors: str | None = "pt", padding: Any = True,
                 **kwargs: Any) -> dict[str, Any]:
        texts = [text] if isinstance(text, str) else list(text or [])
        out: dict[str, Any] = {}
        if images is not None:
            step = self.patch_size * self.spatial_merge_size
            pixels = self.image_processor(images, patch_size={"height": step, "width": step}, return_tensors=return_tensors)
            out.update(pixels)
            sizes = [tuple(int(v) for v in s) for s in pixels["image_sizes"]]
            k, expanded = 0, []
            for t in texts:
                parts = t.split(self.image_token)
                if k + len(parts) - 1 > len(sizes):
                    raise ValueError(f"the text names more images ({self.image_token}) than were given")
                piece = parts[0]
                for rest in parts[1:]:
                    piece += self.image_tokens(*sizes[k]) + rest
                    k += 1
                expanded.append(piece)
            if k != len(sizes):
                raise ValueError(f"{len(sizes)} images but {k} {self.image_token} tokens in the text")
            texts = expanded
        out.update(self.tokenizer(texts, return_tensors=return_tensors, padding=padding, **kwargs))
        return out

    def apply_chat_template(self, messages: Any, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.decode(*args, **kwargs)

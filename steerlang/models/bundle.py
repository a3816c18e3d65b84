"""A loaded multimodal model with its processor, and `load_model`: what sessions, harvesting,
steering and audits share. Nothing here knows the toy world: "toyworld" is only the name of a
shipped model folder (`steerlang.resources`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from steerlang.errors import InputError, ModelLoadError

# The question asked when a caller gives none (the shipped toy model's describe prompt).
DEFAULT_PROMPT = "what is in the picture ?"

TOYWORLD = "toyworld"
TEMPLATE_FILE = "steerlang.json"  # {"template": "{prompt} {image}"}: how the toy model wants its input
TOY_TEMPLATE = "{prompt} {image}"


@dataclass
class ModelBundle:
    """A loaded multimodal model with its processor: what sessions, harvesting and steering share."""

    name: str
    model: torch.nn.Module
    processor: object
    path: Path | None = None
    # Where the image goes relative to the prompt. The toy model reads the question before the
    # image (patches can then attend to the asked kind); LLaVA checkpoints put the image first.
    template: str = "{image} {prompt}"
    # Wrap each (image, prompt) in the processor's chat template (a user turn, then the generation
    # prompt), in the template's order; set by load_model for folders whose processor has one.
    chat: bool = False

    @property
    def tokenizer(self):  # noqa: ANN201 - a transformers tokenizer
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def image_token_id(self) -> int:
        from steerlang.runtime.adapters import config_image_token_id

        tid = config_image_token_id(self.model.config)
        if tid is None:
            raise ModelLoadError(f"{type(self.model).__name__}'s config names no image token")
        return tid

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of every image's patch grid; InputError for a family where it varies."""
        from steerlang.runtime.adapters import adapter_for

        try:
            adapter = adapter_for(self.model)
        except ModelLoadError:  # no adapter: the LLaVA reading of the vision config
            vc = self.model.config.vision_config
            g = vc.image_size // vc.patch_size
            return g, g
        return adapter.fixed_grid()

    def encode(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Processor inputs for a batch of (image, prompt): `<image>` then the prompt, left-padded."""
        from steerlang.models.families import family_of

        image = self.processor.image_token  # type: ignore[attr-defined]
        if self.chat:
            texts = [self._chat_text(p) for p in prompts]
        else:
            texts = [self.template.format(image=image, prompt=p) for p in prompts]
        fam = family_of(type(self.model).__name__)
        pics: list = [[im] for im in images] if fam is not None and fam.nest_images else list(images)
        out = dict(self.processor(images=pics, text=texts, return_tensors="pt", padding=True))  # type: ignore[operator]
        out.pop("labels", None)  # PaliGemma's processor adds training labels
        return out

    def _chat_text(self, prompt: str) -> str:
        parts = [{"type": "image"}, {"type": "text", "text": prompt}]
        if self.template.find("{prompt}") < self.template.find("{image}"):
            parts.reverse()
        messages = [{"role": "user", "content": parts}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)  # type: ignore[attr-defined]

    @torch.no_grad()
    def generate(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str] | str = DEFAULT_PROMPT,
        *,
        max_new_tokens: int = 16,
        batch_size: int = 256,
    ) -> list[str]:
        """Greedy answers, one per image (a single prompt is used for every image)."""
        if isinstance(prompts, str):
            prompts = [prompts] * len(images)
        if len(prompts) != len(images):
            raise InputError(f"got {len(images)} images but {len(prompts)} prompts")
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            enc = self.encode(images[i : i + batch_size], prompts[i : i + batch_size])
            gen = self.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            out += [s.strip() for s in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out


def shipped_model_path() -> Path:
    from steerlang.resources import data_path

    return data_path("models", TOYWORLD)


def load_model(name_or_path: str | os.PathLike = TOYWORLD, *, device: str = "cpu", dtype: torch.dtype | str | None = None,
               device_map: str | dict | None = None, max_memory: int | str | dict | None = None,
               trust_remote_code: bool = False, offload_folder: str | os.PathLike | None = None) -> ModelBundle:
    """Load a model bundle: "toyworld" (shipped), a folder saved with save_pretrained, or a hub id.

    The class is the one the folder's config names (any supported family, docs/models.md); its
    size is checked against the memory available (or `max_memory`) before any weight is read.
    `dtype` (default float32; "auto" = the checkpoint's) and `device_map` (e.g. "auto") pass
    through to `from_pretrained` (with `offload_folder` for blocks a map sends to "disk"). Only safe formats are read (safetensors); remote code is never
    run unless `trust_remote_code=True`.
    """
    from steerlang.models.loader import load_pretrained, load_processor

    name = str(name_or_path)
    source: str | Path = shipped_model_path() if name == TOYWORLD else name_or_path
    model, plan = load_pretrained(source, device=device, device_map=device_map, dtype=dtype, max_memory=max_memory,
                                  trust_remote_code=trust_remote_code, offload_folder=offload_folder)
    processor = load_processor(plan.source, trust_remote_code=trust_remote_code)
    path = plan.path
    template, chat = "{image} {prompt}", False
    if path is not None and (path / TEMPLATE_FILE).exists():
        import json

        template = json.loads((path / TEMPLATE_FILE).read_text()).get("template", template)
    elif getattr(processor, "chat_template", None):
        chat = True
    return ModelBundle(name=name if name == TOYWORLD else Path(name).name or name, model=model, processor=processor,
                       path=path, template=template, chat=chat)


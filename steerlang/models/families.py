"""What steerlang knows about each model family beyond its adapter: how its processor wants a
batch of images, and what docs/models.md says about it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "Family", "family_of"]


@dataclass(frozen=True)
class Family:
    label: str
    classes: tuple[str, ...]
    nest_images: bool = False  # the processor wants one list of images per sample ([[im], [im]])
    note: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("LLaVA-1.5", ("LlavaForConditionalGeneration",)),
    Family("LLaVA-NeXT / OneVision", ("LlavaNextForConditionalGeneration", "LlavaOnevisionForConditionalGeneration"),
           note="a base view and a high-resolution view; row newlines are not patches"),
    Family("Qwen2-VL / Qwen2.5-VL", ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
           note="2x2 patches merged per token; the grid follows the image's size"),
    Family("Qwen3-VL", ("Qwen3VLForConditionalGeneration",),
           note="Qwen2-VL's layout; DeepStack adds vision features to the image positions after the first blocks"),
    Family("Gemma 3", ("Gemma3ForConditionalGeneration",), nest_images=True),
    Family("PaliGemma", ("PaliGemmaForConditionalGeneration",), note="image tokens come before <bos>"),
    Family("Idefics3 / SmolVLM", ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"), nest_images=True,
           note="tiles plus a global view; text model at model.text_model"),
    Family("Mistral3 / Pixtral", ("Mistral3ForConditionalGeneration",), note="[IMG] rows ended by [IMG_BREAK] / [IMG_END]"),
    Family("InternVL", ("InternVLForConditionalGeneration",), note="tiles plus a global thumbnail"),
    Family("Aya Vision", ("AyaVisionForConditionalGeneration",), note="tiles plus a global view"),
    Family("Chameleon", ("ChameleonForConditionalGeneration",), note="VQ image tokens; layers at model.model.layers"),
    Family("Llama 4", ("Llama4ForConditionalGeneration",), note="tiles plus a global view; untested"),
)


def family_of(class_name: str) -> Family | None:
    for f in FAMILIES:
        if class_name in f.classes:
            return f
    return None

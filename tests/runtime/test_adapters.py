"""Adapters: layers, hook points, image positions and grids for LLaVA and Qwen2-VL."""

from __future__ import annotations

import pytest
import torch

from steerlang.errors import InputError, ModelLoadError
from steerlang.lang import compile_program
from steerlang.runtime.adapters import LlavaAdapter, Qwen2VLAdapter, adapter_for
from steerlang.runtime.hooks import Steerer
from steerlang.runtime.masks import IMAGE, Layout
from steerlang.runtime.plan import compile_plan


def test_llava_adapter(bundle, images) -> None:
    from runtime_support import encode

    from steerlang.runtime.session import load_image

    ad = adapter_for(bundle.model)
    assert isinstance(ad, LlavaAdapter)
    assert ad.n_layers == 2 and ad.hidden_size == 32
    assert ad.hook_point(0) == (ad.decoder_layers()[0], True)
    assert ad.hook_point(2) == (ad.decoder_layers()[1], False)
    with pytest.raises(InputError, match="out of range"):
        ad.hook_point(3)
    enc = encode(bundle, [load_image(images[0])])
    assert ad.patch_grid({}, 0) == bundle.patch_grid == (9, 9)
    assert int(ad.image_mask(enc["input_ids"]).sum()) == 81


def test_unknown_family() -> None:
    with pytest.raises(ModelLoadError, match="no steering adapter"):
        adapter_for(torch.nn.Linear(2, 2))


def tiny_qwen():  # noqa: ANN201
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "eos_token_id": 0, "bos_token_id": 1},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 4,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        image_token_id=60, video_token_id=61, vision_start_token_id=62, vision_end_token_id=63)
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(cfg).eval()


def qwen_inputs() -> dict:
    # A 16x24-pixel image: 4x6 patches of 4 pixels, merged 2x2 -> a 2x3 grid of 6 image tokens.
    ids = torch.tensor([[1, 2, 62] + [60] * 6 + [63, 5, 6, 7]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(24, 3 * 2 * 4 * 4),
            "image_grid_thw": torch.tensor([[1, 4, 6]]), "mm_token_type_ids": (ids == 60).int()}


def test_qwen2vl_adapter_and_steered_forward(concepts) -> None:
    model = tiny_qwen()
    ad = adapter_for(model)
    assert isinstance(ad, Qwen2VLAdapter) and ad.n_layers == 2 and ad.hidden_size == 32
    inputs = qwen_inputs()
    assert ad.patch_grid(inputs, 0) == (2, 3)
    layout = Layout.from_prefill(inputs["input_ids"], inputs["attention_mask"], ad.image_mask(inputs["input_ids"]),
                                 lambda i: ad.patch_grid(inputs, i), None)
    pos = layout.positions(0, 13)
    assert (pos.kind == IMAGE).nonzero()[:, 1].tolist() == list(range(3, 9))
    assert pos.row[0, 3:9].tolist() == [0, 0, 0, 1, 1, 1] and pos.col[0, 3:9].tolist() == [0, 1, 2, 0, 1, 2]

    prog = compile_program('let cat = concept "cat"\nsteer image region [0:0.5, 0:1] at layer 0 { add cat * 5 }', concepts)
    plan = compile_plan(prog, concepts, n_layers=ad.n_layers, hidden_size=ad.hidden_size)
    seen: dict[int, torch.Tensor] = {}

    def capture(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen[len(seen)] = (args[0] if args else kwargs["hidden_states"]).clone()

    with torch.no_grad(), Steerer(ad, plan):
        # Registered after the steering pre-hook, so it runs after it: the edited input of block 0.
        handle = ad.decoder_layers()[0].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            model(**inputs)
        finally:
            handle.remove()
    with torch.no_grad():
        handle = ad.decoder_layers()[0].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            model(**inputs)
        finally:
            handle.remove()
    changed = (seen[0] != seen[1]).any(-1)[0].nonzero().flatten().tolist()
    assert changed == [3, 4, 5]  # the first row of the 2x3 grid, nothing else
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        with Steerer(ad, plan):
            steered = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert gen.shape == steered.shape

"""A model that accelerate has split by a device map, with a block offloaded to disk, steers with
exactly the tokens of the same model loaded whole: the hooks follow the modules, whatever device
holds their weights. (This machine has one device, the CPU; "disk" is accelerate's second place.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from PIL import Image
from test_families import _load

import steerlang
from steerlang.runtime.session import Session

# Layers 0 and 1 are the inputs of blocks 0 and 1; layer 2 is the output of block 1, the offloaded one.
PROGRAM = 'let cat = concept "cat"\nsteer image { add cat * 3 }\nsteer prompt at layer 2 { scale cat by 0.5 }\n'
SPLIT = {"model.vision_tower": "cpu", "model.multi_modal_projector": "cpu", "model.language_model.embed_tokens": "cpu",
         "model.language_model.layers.0": "cpu", "model.language_model.layers.1": "disk",
         "model.language_model.norm": "cpu", "model.language_model.rotary_emb": "cpu", "lm_head": "cpu"}


def test_a_split_and_offloaded_model_steers_like_the_whole_one(tmp_path_factory: pytest.TempPathFactory,
                                                               tmp_path: Path, concepts) -> None:  # noqa: ANN001
    whole, _enc = _load("llava", tmp_path_factory)
    split = steerlang.load_model(whole.path, device_map=SPLIT, offload_folder=tmp_path / "offload")
    block = split.model.model.language_model.layers[1]
    assert split.model.hf_device_map["model.language_model.layers.1"] == "disk"
    assert hasattr(block, "_hf_hook") and {p.device.type for p in block.parameters()} == {"meta"}

    rng = np.random.RandomState(3)
    images = [Image.fromarray((rng.rand(16, 16, 3) * 255).astype("uint8")) for _ in range(2)]
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tiny.PAD}
    tokens = {}
    for label, bundle in (("whole", whole), ("split", split)):
        session = Session(bundle, concepts)
        enc = bundle.encode(images, ["what is in the picture ?"] * 2)
        steps: list[int] = []
        with torch.no_grad():
            plain = bundle.model.generate(**enc, **kw)
            with session.steer(PROGRAM, on_forward=steps.append):
                steered = bundle.model.generate(**enc, **kw)
        assert steps == list(range(6)), label  # one prefill, then decode steps, on either model
        tokens[label] = (plain, steered)
    assert torch.equal(tokens["whole"][0], tokens["split"][0])
    assert torch.equal(tokens["whole"][1], tokens["split"][1])
    assert not torch.equal(tokens["whole"][0], tokens["whole"][1])  # the program does reach the tokens

"""A tiny concept set on disk: random SAEs at layers 0 and 1, two named joint concepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
from steerlang.dictionary.io import save_dictionary
from steerlang.dictionary.sae import SAEConfig, make_sae

D_MODEL = 128  # the toy model's width


def make_tiny_concept_set(root: Path, d_model: int = D_MODEL) -> Path:
    torch.manual_seed(0)
    entries = []
    for layer in (0, 1):
        for modality in ("image", "text"):
            sae = make_sae(SAEConfig(architecture="topk", d_in=d_model, d_sae=32, k=4, layer=layer, modality=modality))
            with torch.no_grad():
                sae.W_enc.normal_(0, 0.2)
                sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(32, d_model), dim=-1))
            save_dictionary(sae, root / "saes" / f"layer{layer}-{modality}")
            entries.append({"layer": layer, "modality": modality, "path": f"saes/layer{layer}-{modality}"})
    (root / "saes.json").write_text(json.dumps({"model": "toyworld", "layers": [0, 1], "saes": entries}))
    concepts = [
        Concept("joint", 0, "cat", ("kitty",), (LatentGroup(0, "image", (1, 2), (1.0, 1.0), scale=2.0, precision=0.9, recall=0.7),
                                               LatentGroup(0, "text", (3,), (1.0,)), LatentGroup(1, "image", (4,), (1.0,))),
                detection=0.97, frequency=0.3),
        Concept("joint", 1, "dog", (), (LatentGroup(0, "image", (5,), (1.0,)),), detection=0.96, frequency=0.3),
        Concept("text", 0, "and@L1/text0", (), (LatentGroup(1, "text", (7,), (1.0,)),), detection=0.8, frequency=0.9),
    ]
    states = {f"background.L{layer}": torch.zeros(81, d_model) for layer in (0, 1)}
    save_concept_set(root, name="tiny", model="toyworld", layers=[0, 1], concepts=concepts, tensors=states)
    return root


@pytest.fixture()
def tiny_concepts(tmp_path: Path):
    return load_concept_set(make_tiny_concept_set(tmp_path / "tiny"))

"""Fixtures for the family tests: a hand-made concept set fitting every tiny model (hidden 32,
layers 0 to 2), and each family's tiny model saved with save_pretrained and loaded back through
the loader (cached per test session)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402

LAYERS = [0, 1, 2]


def _sae(arch: str, seed: int, layer: int, modality: str):  # noqa: ANN202
    from steerlang.dictionary.sae import SAEConfig, make_sae

    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig(architecture=arch, d_in=tiny.H, d_sae=64, k=None, layer=layer, modality=modality,
                             model_name="tiny"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(tiny.H, 64, generator=g) * 0.4)
        sae.W_dec.copy_(torch.randn(64, tiny.H, generator=g) * 0.3)
        sae.b_enc.copy_(torch.randn(64, generator=g) * 0.1)
        sae.b_dec.zero_()
    return sae.requires_grad_(False)


@pytest.fixture(scope="session")
def concepts(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """ReLU SAEs (image and text) at layers 0-2; "cat" has an image and a text group at each."""
    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary

    root = tmp_path_factory.mktemp("cs") / "tinyfam"
    root.mkdir(parents=True)
    entries = []
    for layer in LAYERS:
        for modality in ("image", "text"):
            rel = f"saes/layer{layer}-{modality}"
            save_dictionary(_sae("relu", 10 * layer + (modality == "text"), layer, modality), root / rel)
            entries.append({"layer": layer, "modality": modality, "path": rel})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": LAYERS, "modalities": ["image", "text"], "saes": entries}))
    groups = tuple(LatentGroup(la, m, (3, 5), (1.0, 0.5), 0.25, 0.3) for la in LAYERS for m in ("image", "text"))  # type: ignore[arg-type]
    save_concept_set(root, name="tinyfam", model="tiny", layers=LAYERS, concepts=[Concept("joint", 0, "cat", (), groups)])
    return load_concept_set(root)

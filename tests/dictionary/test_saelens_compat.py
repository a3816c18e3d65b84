"""Files we write load in SAELens itself (``SAE.load_from_disk``) with the same numbers.

Skipped when sae-lens is not installed (the project does not depend on it)."""

from __future__ import annotations

import pytest
import torch
from dictionary_support import random_sae

from steerlang.dictionary.io import load_dictionary, save_dictionary

sae_lens = pytest.importorskip("sae_lens")


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_saelens_loads_our_files(arch, acts, tmp_path):
    ours = random_sae(arch, k=5)
    ours.cfg.hook_name, ours.cfg.model_name = "model.layers.2", "toy-llava"
    out = save_dictionary(ours, tmp_path / "d")
    theirs = sae_lens.SAE.load_from_disk(str(out))
    assert theirs.cfg.d_sae == ours.cfg.d_sae and theirs.cfg.metadata.hook_name == "model.layers.2"
    with torch.no_grad():
        assert torch.allclose(theirs.encode(acts), ours.encode(acts), atol=1e-6)
        assert torch.allclose(theirs.decode(ours.encode(acts)), ours.decode(ours.encode(acts)), atol=1e-6)
        assert torch.allclose(theirs(acts), ours(acts), atol=1e-6)


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_we_load_saelens_files(arch, acts, tmp_path):
    ours = random_sae(arch, k=5)
    theirs = sae_lens.SAE.load_from_disk(str(save_dictionary(ours, tmp_path / "a")))
    theirs.save_model(tmp_path / "b")  # written by SAELens
    back = load_dictionary(tmp_path / "b")
    with torch.no_grad():
        assert torch.allclose(back(acts), theirs(acts), atol=1e-6)


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_hook_names_survive_saelens(layer, tmp_path):
    """Our hook name is one SAELens (and TransformerLens) understands; steerlang's layer and the HF
    module ride along in its metadata through SAELens' own load and save."""
    ours = random_sae("topk", k=5, layer=layer, model_name="toy-llava")
    out = save_dictionary(ours, tmp_path / "d", n_layers=4)
    theirs = sae_lens.SAE.load_from_disk(str(out))
    expected = "blocks.3.hook_resid_post" if layer == 4 else f"blocks.{layer}.hook_resid_pre"
    assert theirs.cfg.metadata.hook_name == expected
    theirs.save_model(tmp_path / "b")
    back = load_dictionary(tmp_path / "b", n_layers=4)
    assert back.cfg.layer == layer and back.cfg.metadata["hf_module"] == f"model.language_model.layers.{min(layer, 3)}"

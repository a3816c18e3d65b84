"""Raw SAEs on the toy model: `steer run --dictionary SAE_FOLDER`, `load_session(model, SAE_FOLDER)`,
`steer dict eval` of SAELens-written folders, and the refusals that need a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from interop_support import identity, write_saelens_v6
from typer.testing import CliRunner

import steerlang
from steerlang.cli import app
from steerlang.dictionary.io import load_dictionary
from steerlang.errors import DictionaryError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "programs" / "images" / "cat_and_tree.png"
HIDDEN = 128  # the toy model's hidden size; 4 decoder blocks: layers 0..4


@pytest.fixture(scope="module")
def bundle():  # noqa: ANN201
    return steerlang.load_model("toyworld")


@pytest.fixture(scope="module")
def layer0(tmp_path_factory) -> Path:
    """The shipped layer-0 image SAE, rewritten as SAELens 6 would write it: no card, no steerlang
    metadata, no modality (so it serves both), hook blocks.0.hook_resid_pre."""
    sae = load_dictionary(ROOT / "dictionaries" / "toyworld" / "saes" / "layer0-image")
    w = {n: getattr(sae, n).detach() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    return write_saelens_v6(tmp_path_factory.mktemp("raw") / "sae", "topk", w, k=sae.cfg.k, hook="blocks.0.hook_resid_pre")


def _block_input(session, prog, enc, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the state entering `layer` unsteered, the same state after the steering hook)."""
    seen: list[torch.Tensor] = []

    def capture(_m, args, kwargs):  # noqa: ANN001, ANN202
        seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    block = session.adapter.decoder_layers()[layer]
    with torch.no_grad():
        h = block.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            session.model(**enc)
        finally:
            h.remove()
        with session.steer(prog):
            h = block.register_forward_pre_hook(capture, with_kwargs=True)  # after the steering hook
            try:
                session.model(**enc)
            finally:
                h.remove()
    return seen[0], seen[1]


def test_api_set_image_latent_changes_exactly_the_image_positions(bundle, layer0):
    from PIL import Image

    from steerlang.world.vocab import DEFAULT_PROMPT

    session = steerlang.load_session(bundle, layer0)
    assert session.concepts.is_raw and session.concepts.layer_numbers == [0]
    prog = session.compile("steer image { set image#3 = 2 }")
    enc = bundle.encode([Image.open(IMAGE).convert("RGB")], [DEFAULT_PROMPT])
    before, after = _block_input(session, prog, enc, 0)
    changed = (after != before).any(-1)
    image_rows = enc["input_ids"] == bundle.image_token_id
    assert bool(image_rows.any()) and torch.equal(changed, image_rows)
    # the edit is exactly "latent 3 = 2" at every image position: h' = h + (2 - z_3(h)) W_dec[3]
    sae = session.concepts.sae(0, "image")
    with torch.no_grad():
        z3 = sae.encode(before[image_rows])[:, 3]
        assert torch.allclose(after[image_rows] - before[image_rows], (2 - z3)[:, None] * sae.W_dec[3], atol=1e-5)
    # text#3 edits text positions only; joint#3 (an SAE trained on all positions) every position
    _b, after_t = _block_input(session, session.compile("steer prompt { set text#3 = 2 }"), enc, 0)
    assert not bool((after_t != before).any(-1)[image_rows].any()) and bool((after_t != before).any(-1)[~image_rows].any())
    _b, after_j = _block_input(session, session.compile("steer all { set joint#3 = 2 }"), enc, 0)
    assert bool((after_j != before).any(-1)[image_rows].all())
    [r] = session.run(prog, images=[IMAGE], compare=True, max_new_tokens=8)
    assert r.baseline and r.output


def test_cli_run_with_a_raw_sae_folder(layer0, tmp_path):
    prog = tmp_path / "p.stl"
    prog.write_text("steer image { set image#3 = 2 }\ngenerate 6 tokens\n")
    res = CliRunner().invoke(app, ["run", str(prog), "--model", "toyworld", "--dictionary", str(layer0), "--image", str(IMAGE),
                                   "--jsonl"])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in res.stdout.splitlines()]
    assert line["image"] == str(IMAGE) and line["baseline"]


def test_shipped_saes_as_raw_folders(bundle):
    """The shipped SAEs folder (ten SAEs, modality from each file) as raw SAEs: an edit names its layer."""
    session = steerlang.load_session(bundle, ROOT / "dictionaries" / "toyworld" / "saes")
    assert session.concepts.layer_numbers == [0, 1, 2, 3, 4]
    [r] = session.run("steer image at layer 2 { off image#5 }", images=[IMAGE], max_new_tokens=6)
    assert r.output
    with pytest.raises(steerlang.errors.InputError, match="at each of layers 0, 1, 2, 3, 4"):
        session.run("steer image { off image#5 }", images=[IMAGE])


def test_session_refuses_an_sae_of_another_model(bundle, tmp_path):
    far = write_saelens_v6(tmp_path / "far", "standard", identity(HIDDEN), hook="blocks.9.hook_resid_post")
    with pytest.raises(DictionaryError, match=r"hook 'blocks.9.hook_resid_post' \(the output of block 9\) is steerlang layer 10, "
                                              r"but model 'toyworld' has layers 0 \(LM input\) to 4 \(the output of block 3\)"):
        steerlang.load_session(bundle, far)
    narrow = write_saelens_v6(tmp_path / "narrow", "standard", identity(16))
    with pytest.raises(DictionaryError, match="d_in=16 does not match model 'toyworld''s hidden size 128"):
        steerlang.load_session(bundle, narrow)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_dict_eval_of_saelens_identity_folders(arch, tmp_path, cache, monkeypatch):
    """An SAE written by SAELens 6 itself (metadata.hook_name = blocks.1.hook_resid_post) evaluates: layer 2."""
    monkeypatch.setenv("STEERLANG_CACHE", str(cache))
    folder = write_saelens_v6(tmp_path / arch, arch, identity(HIDDEN))
    res = CliRunner().invoke(app, ["dict", "eval", str(folder), "--model", "toyworld", "--count", "12", "--splice-count", "6",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["layer"], out["modality"]) == (2, "both")
    assert out["reconstruction"]["fvu"] < 1e-10
    assert all(abs(s["delta_ce"]) < 1e-4 for s in out["spliced"].values())

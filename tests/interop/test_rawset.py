"""A raw SAE is a dictionary: SAE folders as a concept set with no named concepts (no model needed)."""

from __future__ import annotations

import json

import pytest
from interop_support import D, identity, random_weights, write_gemma_scope, write_saelens_v6, write_sparsify
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary.concepts import load_concept_set
from steerlang.dictionary.rawset import RawConceptSet, load_raw_set
from steerlang.errors import DictionaryError, InputError
from steerlang.lang import LangError, compile_program, ir
from steerlang.runtime.plan import compile_plan


def _plan(cs, text: str, n_layers: int = 4, file: str | None = None):
    return compile_plan(compile_program(text, cs, file=file), cs, n_layers=n_layers, hidden_size=D)


def test_one_saelens_folder_serves_both_modalities(tmp_path):
    folder = write_saelens_v6(tmp_path / "sae", "standard", identity())  # no modality: trained on all positions
    cs = load_concept_set(folder)
    assert isinstance(cs, RawConceptSet) and cs.is_raw and cs.names() == []
    assert cs.layer_numbers == [2] and sorted(cs.slots) == [(2, "image"), (2, "text")]
    assert cs.sae(2, "image") is cs.sae(2, "text")  # one SAE, loaded once
    for space, mods in (("image", {"image"}), ("text", {"text"}), ("joint", {"image", "text"})):
        c = cs.by_key(f"{space}#5")
        assert {g.modality for g in c.groups} == mods and all(g.latents == (5,) and g.scale == 1 for g in c.groups)
    assert cs.lookup_id("image", 2 * D - 1) is not None and cs.lookup_id("image", 2 * D) is None
    assert "image#0..image#31 at layer 2" in cs.id_hint("image", 99)
    assert cs.background(2) is None and cs.prototype(cs.by_key("image#5"), 2) is None
    plan = _plan(cs, "steer image { set image#3 = 2 }\nsteer prompt { off text#4 }")
    assert plan.layers == [2] and plan.latents[(2, "image")].tolist() == [3] and plan.latents[(2, "text")].tolist() == [4]


def test_modality_from_metadata_or_folder_names(tmp_path):
    root = tmp_path / "saes"
    write_saelens_v6(root / "layer1-image", "standard", identity(), hook="blocks.0.hook_resid_post")
    write_saelens_v6(root / "text" / "blocks.0.hook_resid_post", "standard", identity(), hook="blocks.0.hook_resid_post")
    write_saelens_v6(root / "l3", "standard", identity(), hook="blocks.3.hook_resid_pre", metadata={"modality": "image"})
    cs = load_concept_set(root)
    assert {k: v.path.relative_to(root).as_posix() for k, v in cs.slots.items()} == {
        (1, "image"): "layer1-image", (1, "text"): "text/blocks.0.hook_resid_post", (3, "image"): "l3"}
    assert cs.lookup_id("joint", 0) is None and "per modality" in cs.id_hint("joint", 0)
    assert cs.lookup_id("text", 0).layers == (1,) and cs.lookup_id("image", 0).layers == (1, 3)
    # latent 0 of layer 1's SAE is not latent 0 of layer 3's: an edit must say which layer
    with pytest.raises(InputError) as err:
        _plan(cs, "steer image { set image#0 = 1 }", file="p.stl")
    assert str(err.value) == ("p.stl: image#0 names latent 0 of a different SAE at each of layers 1, 3: say which one by "
                              "adding `at layer 1` (or another of them) to the steer line")
    assert _plan(cs, "steer image at layer 3 { set image#0 = 1 }").layers == [3]
    assert _plan(cs, "steer prompt { off text#0 }").layers == [1]  # one text SAE: no ambiguity


def test_conflicts_and_missing_layers(tmp_path):
    root = tmp_path / "two"
    write_saelens_v6(root / "a", "standard", identity())
    write_saelens_v6(root / "b", "standard", identity())
    with pytest.raises(DictionaryError, match=r"two image SAEs at layer 2: .*a and .*b; keep one"):
        load_concept_set(root)
    npz = write_gemma_scope(tmp_path / "bare", identity(b_dec=False))
    with pytest.raises(DictionaryError, match="does not say which layer it reads: put it under a folder named layer_L"):
        load_concept_set(npz.parent)
    assert load_raw_set(npz, layer=3).layer_numbers == [3]
    with pytest.raises(DictionaryError, match=r"neither a concept set .* nor an SAE: expected cfg.json \+ sae_weights"):
        load_concept_set((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_gemma_scope_and_sparsify_trees(tmp_path):
    gs = tmp_path / "gemma-scope-2b-pt-res"
    write_gemma_scope(gs / "layer_0" / "width_16k" / "average_l0_50", identity(b_dec=False))
    write_gemma_scope(gs / "layer_2" / "width_16k" / "average_l0_60", identity(b_dec=False))
    cs = load_concept_set(gs)
    assert cs.layer_numbers == [1, 3] and all(i.format == "gemma_scope" for i in cs.saes)
    write_gemma_scope(gs / "layer_2" / "width_16k" / "average_l0_9", identity(b_dec=False))  # two L0s of one layer
    with pytest.raises(DictionaryError, match="two image SAEs at layer 3"):
        load_concept_set(gs)
    sp = tmp_path / "sparsify-run"
    for hook in ("layers.0", "layers.1"):
        write_sparsify(sp / hook, random_weights(), k=4)
    (sp / "config.json").write_text(json.dumps({"model": "toy-model"}))
    cs = load_concept_set(sp)
    assert cs.layer_numbers == [1, 2] and cs.model == "toy-model"


def test_saes_json_without_concepts(tmp_path):
    """A concept set whose concepts were never built: its saes.json says each SAE's layer and modality."""
    for layer in (0, 1):
        for m in ("image", "text"):
            write_saelens_v6(tmp_path / "saes" / f"layer{layer}-{m}", "standard", identity(), hook=None)
    (tmp_path / "saes.json").write_text(json.dumps({"model": "toy", "layers": [0, 1], "saes": [
        {"layer": la, "modality": m, "path": f"saes/layer{la}-{m}"} for la in (0, 1) for m in ("image", "text")]}))
    cs = load_concept_set(tmp_path)
    assert cs.is_raw and sorted(cs.slots) == [(0, "image"), (0, "text"), (1, "image"), (1, "text")]


def test_check_and_features_on_a_raw_folder(tmp_path):
    folder = write_saelens_v6(tmp_path / "sae", "topk", identity(), k=D)
    prog = tmp_path / "p.stl"
    prog.write_text("steer image { set image#3 = 2 }\n")
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(prog), "--dictionary", str(folder)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.stl"
    bad.write_text('steer image { set image#99 = 2 }\nsteer image { off concept "cat" }\n')
    res = runner.invoke(app, ["check", str(bad), "--dictionary", str(folder)])
    assert res.exit_code == 1
    assert "hint: latents: image#0..image#31 at layer 2" in res.stderr
    assert "no named concepts (raw SAEs): address latents by id" in res.stderr
    res = runner.invoke(app, ["features", "--dictionary", str(folder)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "raw SAEs, no named concepts. Address latents by id: image#N" in res.stdout
    assert "joint#N names its latent N at every position" in res.stdout and "blocks.1.hook_resid_post" in res.stdout
    res = runner.invoke(app, ["features", "--dictionary", str(folder), "--json"])
    [row] = [json.loads(line) for line in res.stdout.splitlines()]
    assert row["ids"] == "image#0..31, text#0..31, joint#0..31" and row["layer"] == 2 and row["k"] == D
    res = runner.invoke(app, ["features", "text#7", "--dictionary", str(folder), "--json"])
    assert [json.loads(line)["modality"] for line in res.stdout.splitlines()] == ["text"]
    res = runner.invoke(app, ["features", "cat", "--dictionary", str(folder)])
    assert res.exit_code == 1 and "no concept matches 'cat'" in res.stderr


def test_python_ir_on_a_raw_set(tmp_path):
    cs = load_concept_set(write_saelens_v6(tmp_path / "sae", "standard", identity()))
    prog = ir.Program(steps=[ir.Steer(scope=ir.Scope(kind="image"), edits=[
        ir.Edit(op="set", value=1.5, target=ir.Concept(terms=[ir.Term(ref=ir.ConceptRef(name="image#7", space="image", index=7))]))])])
    assert compile_plan(prog, cs, n_layers=4, hidden_size=D).latents[(2, "image")].tolist() == [7]
    with pytest.raises(LangError):
        compile_program('steer image { off concept "cat" }', cs)

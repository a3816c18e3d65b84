"""Harvesting and the spliced loss on a tiny random toy-world model."""

from __future__ import annotations

import json

import pytest
import torch

from steerlang.dictionary.harvest import LayerCapture, harvest
from steerlang.dictionary.sae import SAEConfig, make_sae
from steerlang.dictionary.source import ActivationSource
from steerlang.dictionary.splice import spliced_loss
from steerlang.errors import InputError
from steerlang.world.model import ModelBundle, build_processor, build_toy_model
from steerlang.world.scenes import make_scene


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    proc = build_processor()
    return ModelBundle("tiny", build_toy_model(len(proc.tokenizer), seed=1).eval(), proc)


def test_harvest_labels_positions_by_modality_and_cell(bundle: ModelBundle, tmp_path) -> None:
    out = harvest(bundle, tmp_path / "acts", seed=5, count=6, batch_size=4, layers=[0, 2])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layers"] == [0, 2] and manifest["metadata"]["scene_seed"] == 5
    x, lab = ActivationSource.from_shards(out, 0, "both").load(with_labels=True)
    rows, cols = bundle.patch_grid
    for scene_id in range(6):
        sel = lab["scene"] == scene_id
        mod, cell = lab["modality"][sel], lab["cell"][sel]
        assert int((mod == 0).sum()) == rows * cols
        assert sorted(cell[mod == 0].tolist()) == list(range(rows * cols))
        assert (cell[mod != 0] == -1).all()
        caption = make_scene(5, scene_id).caption
        # caption tokens plus </s>
        assert int((mod == 2).sum()) == len(caption.split()) + 1
    assert x.shape[1] == bundle.model.config.text_config.hidden_size


def test_harvest_is_deterministic(bundle: ModelBundle, tmp_path) -> None:
    a = harvest(bundle, tmp_path / "a", seed=5, count=3, layers=[1])
    b = harvest(bundle, tmp_path / "b", seed=5, count=3, layers=[1])
    xa = ActivationSource.from_shards(a, 1).load()
    xb = ActivationSource.from_shards(b, 1).load()
    assert torch.equal(xa, xb)


def test_capture_hooks_are_removed(bundle: ModelBundle) -> None:
    layer0 = bundle.model.model.language_model.layers[0]
    before = len(layer0._forward_pre_hooks)
    with pytest.raises(RuntimeError):
        with LayerCapture(bundle, [0, 4]):
            raise RuntimeError("boom")
    assert len(layer0._forward_pre_hooks) == before


def test_bad_layer_is_a_clear_error(bundle: ModelBundle, tmp_path) -> None:
    with pytest.raises(InputError, match="--layer: 9 is out of range"):
        harvest(bundle, tmp_path / "x", seed=1, count=1, layers=[9])


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_spliced_loss_of_an_exact_reconstruction_is_zero(bundle: ModelBundle) -> None:
    res = spliced_loss(bundle, 2, {"image": _Identity(), "text": _Identity()}, seed=4, count=4)
    for name in ("image", "text", "both"):
        assert abs(res[name]["delta_ce"]) < 1e-5
        assert res[name]["loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    d = bundle.model.config.text_config.hidden_size
    sae = make_sae(SAEConfig(architecture="topk", d_in=d, d_sae=16, k=2))
    bad = spliced_loss(bundle, 2, {"image": sae, "text": sae}, seed=4, count=4, splices=("text",))
    assert bad["text"]["ce_sae"] != bad["text"]["ce_orig"]


def test_dict_train_rejects_bad_layer_and_modality_before_harvesting(tmp_path) -> None:
    from typer.testing import CliRunner

    from steerlang.cli import app

    for args, needle in ((["--layer", "9"], "--layer: 9 is out of range"), (["--layer", "1", "--modality", "pixels"], "--modality")):
        res = CliRunner().invoke(app, ["dict", "train", "--out", str(tmp_path / "d"), *args])
        assert res.exit_code == 1 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "d").exists()


def test_question_harvest_asks_present_and_absent_kinds(bundle: ModelBundle, tmp_path) -> None:
    from steerlang.dictionary.harvest import harvest_examples

    scenes = [make_scene(5, i) for i in range(200)]
    ex = harvest_examples(scenes, 11, "questions")
    kinds = [e.prompt.split()[3] for e in ex]
    assert all(e.prompt.startswith("is there a ") for e in ex)
    assert all((e.answer == "yes") == (k in s.kinds) for e, k, s in zip(ex, kinds, scenes, strict=True))
    assert 70 <= sum(e.answer == "yes" for e in ex) <= 130
    assert harvest_examples(scenes, 11, "questions") == ex  # seeded
    with pytest.raises(InputError, match="prompts"):
        harvest_examples(scenes, 11, "captions")
    with pytest.raises(InputError, match="--prompts"):
        harvest(bundle, tmp_path / "bad", seed=5, count=3, layers=[1], prompts="captions")
    assert not (tmp_path / "bad").exists()
    out = harvest(bundle, tmp_path / "q", seed=5, count=3, batch_size=4, layers=[1], prompts="questions")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metadata"]["prompts"] == "questions"
    _, lab = ActivationSource.from_shards(out, 1, "both").load(with_labels=True)
    assert int((lab["modality"] == 2).sum()) == 3 * 2  # yes / no, then </s>


@pytest.mark.parametrize("prompts", ["describe", "questions"])
def test_the_toy_harvest_is_the_collated_batches_it_always_was(tmp_path, prompts) -> None:
    """The toy world's own harvest (now through harvest_dataset and the model's adapter) gives, bit for
    bit, what the harvester computed before it: the collated teacher-forced batches of 64 scenes
    (`scene_batch`), labelled by `position_labels`, run whole through the model."""
    from steerlang.dictionary.harvest import position_labels, scene_batch
    from steerlang.world.model import load_model

    toy = load_model("toyworld")
    out = harvest(toy, tmp_path / "acts", seed=2, count=70, prompts=prompts)  # blocks of 64 and 6 scenes
    layers = list(range(5))
    want: dict[str, list[torch.Tensor]] = {k: [] for k in ("x0", "x4", "modality", "cell", "scene", "position")}
    for start in (0, 64):
        ids = range(start, min(70, start + 64))
        batch = scene_batch(toy, 2, ids, prompts)
        keep, modality, cell = position_labels(toy, batch)
        with LayerCapture(toy, layers) as cap, torch.no_grad():
            toy.model(**{k: v for k, v in batch.items() if k != "labels"})
        want["x0"].append(cap.captured[0][keep])
        want["x4"].append(cap.captured[4][keep])
        want["modality"].append(modality[keep])
        want["cell"].append(cell[keep])
        want["scene"].append(torch.tensor(list(ids), dtype=torch.int32)[:, None].expand_as(keep)[keep])
        want["position"].append(torch.arange(keep.shape[1], dtype=torch.int32)[None].expand_as(keep)[keep])
    x0, lab = ActivationSource.from_shards(out, 0, "both").load(with_labels=True)
    x4 = ActivationSource.from_shards(out, 4, "both").load()
    assert torch.equal(x0, torch.cat(want["x0"])) and torch.equal(x4, torch.cat(want["x4"]))
    for key in ("modality", "cell", "scene", "position"):
        assert torch.equal(lab[key], torch.cat(want[key])), key

"""The toy model's real transformers code path: processor, save/load, the shipped weights."""

from __future__ import annotations

import pytest
import torch

from steerlang.errors import ModelLoadError
from steerlang.world.model import ModelBundle, build_processor, build_toy_model, load_model
from steerlang.world.scenes import make_scenes, render


@pytest.fixture(scope="module")
def random_bundle() -> ModelBundle:
    proc = build_processor()
    return ModelBundle("random", build_toy_model(len(proc.tokenizer), seed=3).eval(), proc)


def test_processor_inserts_as_many_image_tokens_as_the_tower_produces(random_bundle: ModelBundle) -> None:
    b = random_bundle
    images = [render(s) for s in make_scenes(0, 3)]
    enc = b.encode(images, ["what is in the picture ?", "is there a cat ?", "describe the picture ."])
    n_tokens = (enc["input_ids"] == b.image_token_id).sum(dim=1)
    with torch.no_grad():
        feats = b.model.model.get_image_features(pixel_values=enc["pixel_values"])
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    per_image = feats[0].shape[0] if isinstance(feats, (list, tuple)) else feats.shape[1]
    rows, cols = b.patch_grid
    assert n_tokens.tolist() == [rows * cols] * 3
    assert per_image == rows * cols


def test_save_load_round_trip_gives_identical_greedy_outputs(random_bundle: ModelBundle, tmp_path) -> None:
    random_bundle.model.save_pretrained(tmp_path)
    random_bundle.processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    images = [render(s) for s in make_scenes(11, 6)]
    before = random_bundle.generate(images, max_new_tokens=6)
    after = loaded.generate(images, max_new_tokens=6)
    assert before == after
    assert (tmp_path / "tokenizer.json").exists()
    for name, p in random_bundle.model.state_dict().items():
        assert torch.equal(p, loaded.model.state_dict()[name]), name


def test_missing_model_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_shipped_model_captions_and_answers() -> None:
    bundle = load_model("toyworld")
    scenes = make_scenes(4242, 40)
    images = [render(s) for s in scenes]
    captions = bundle.generate(images, max_new_tokens=16)
    assert sum(c == s.caption for c, s in zip(captions, scenes, strict=True)) >= 38
    kinds = [s.kinds[0] for s in scenes]
    answers = bundle.generate(images, [f"is there a {k} ?" for k in kinds], max_new_tokens=2)
    assert answers.count("yes") >= 38


def test_order_labels_mark_each_object_with_its_rank_in_reading_order() -> None:
    from steerlang.world.scenes import make_scene, patch_pixel_counts
    from steerlang.world.train import order_labels

    scene = make_scene(1, 0, objects=3)
    rank = order_labels(scene)
    covered = patch_pixel_counts(scene) >= 8
    for i in range(3):
        assert all(rank[p] == i for p in covered[i].nonzero()[0])
    assert all(rank[p] == -100 for p in (~covered.any(0)).nonzero()[0])


def test_a_few_training_steps_with_the_order_head_run_and_leave_an_eval_model() -> None:
    from steerlang.world.train import ToyTrainConfig, train_toy_model

    bundle = train_toy_model(ToyTrainConfig(steps=2, batch_size=4, warmup=1, threads=1))
    assert not bundle.model.training
    assert bundle.generate([render(make_scenes(5, 1)[0])], max_new_tokens=2)

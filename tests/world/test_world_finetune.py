"""`steer world finetune`: training on an image–caption corpus (images and captions only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.world.corpus import export_toy_corpus
from steerlang.world.model import load_model, shipped_model_path
from steerlang.world.scenes import make_scene, render
from steerlang.world.train import (
    CorpusExample,
    Example,
    FinetuneConfig,
    caption_question,
    collate,
    corpus_example,
    finetune_model,
    fresh_toy_bundle,
    read_caption_corpus,
)

runner = CliRunner()
TINY = FinetuneConfig(steps=2, batch_size=4, warmup=1, threads=1)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):  # noqa: ANN001, ANN201
    out = tmp_path_factory.mktemp("ft") / "corpus"
    export_toy_corpus(out, seed=7101, count=6, mismatch_rate=0.5)
    return out


def test_questions_come_from_the_caption_words_only() -> None:
    rng = np.random.default_rng(0)
    asked = [caption_question("a cat and a tree .", rng) for _ in range(200)]
    yes = {q for q, a in asked if a == "yes"}
    no = {q for q, a in asked if a == "no"}
    assert yes == {"is there a cat ?", "is there a tree ?"}
    assert no and not any(k in q for q in no for k in ("cat", "tree"))
    assert 60 < len([a for _, a in asked if a == "yes"]) < 140
    # a caption naming no known kind can only teach "no"
    assert {a for _, a in (caption_question("a zebra .", rng) for _ in range(20))} == {"no"}


def test_the_corpus_reader_takes_the_shown_caption_and_never_the_truth(corpus_dir) -> None:  # noqa: ANN001
    bundle = fresh_toy_bundle(0)
    corpus = read_caption_corpus(corpus_dir, bundle)
    shown = [json.loads(x)["text"] for x in (corpus_dir / "metadata.jsonl").read_text().splitlines()]
    truth = [json.loads(x) for x in (corpus_dir / "truth.jsonl").read_text().splitlines()]
    assert corpus.captions == shown and len(corpus) == 6
    assert any(t["mismatched"] for t in truth) and any(c != t["caption"] for c, t in zip(corpus.captions, truth, strict=True))
    assert corpus.pixels.shape == (6, 3, 72, 72)
    assert corpus.unknown_words == 0 and corpus.bad_rows == {}


def test_a_corpus_example_batches_exactly_like_the_rendered_scene() -> None:
    bundle = fresh_toy_bundle(0)
    scene = make_scene(5, 3)
    pixels = bundle.processor.image_processor([render(scene)], return_tensors="pt")["pixel_values"][0]
    a = collate(bundle, [Example(scene, "what is in the picture ?", scene.caption)])
    b = collate(bundle, [CorpusExample(pixels, "what is in the picture ?", scene.caption)])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="truth"):
        collate(bundle, [CorpusExample(pixels, "what is in the picture ?", scene.caption)], grounding=True)


def test_captions_only_mode_never_asks_questions(corpus_dir) -> None:  # noqa: ANN001
    corpus = read_caption_corpus(corpus_dir, fresh_toy_bundle(0))
    rng = np.random.default_rng(1)
    cfg = FinetuneConfig(questions=False)
    assert all(corpus_example(corpus, i % 6, rng, cfg).answer == corpus.captions[i % 6] for i in range(30))


def test_finetuning_is_seeded_and_changes_the_weights(corpus_dir) -> None:  # noqa: ANN001
    def run(seed: int) -> dict[str, torch.Tensor]:
        bundle = fresh_toy_bundle(0)
        corpus = read_caption_corpus(corpus_dir, bundle)
        losses: list[float] = []
        finetune_model(bundle, corpus, FinetuneConfig(steps=2, batch_size=4, warmup=1, threads=1, seed=seed),
                       on_step=lambda s, loss: losses.append(loss))
        assert len(losses) == 2 and all(np.isfinite(losses)) and not bundle.model.training
        return {k: v.clone() for k, v in bundle.model.state_dict().items()}

    start = fresh_toy_bundle(0).model.state_dict()
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], start[k]) for k in a)


def test_cli_finetunes_the_shipped_model_into_a_new_folder(corpus_dir, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "m"
    res = runner.invoke(app, ["world", "finetune", "--from", "toyworld", "--data", str(corpus_dir), "--out", str(out),
                              "--steps", "2", "--batch-size", "4", "--warmup", "1", "--threads", "1",
                              "--eval-count", "3", "--eval-seed", "9201"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "train_report.json").read_text())
    assert report["from"] == "toyworld" and report["data"]["samples"] == 6
    assert report["finetune"]["steps"] == 2 and report["eval"]["seed"] == 9201 and report["eval"]["n_scenes"] == 3
    bundle = load_model(out)
    assert bundle.template == "{prompt} {image}"
    assert len(bundle.generate([render(make_scene(5, 0))], max_new_tokens=4)) == 1


def test_cli_refuses_bad_options_in_one_line(corpus_dir, tmp_path) -> None:  # noqa: ANN001
    base = ["world", "finetune", "--data", str(corpus_dir), "--steps", "1"]
    cases = (
        (["--from", "scratch", "--out", str(tmp_path / "a"), "--eval-seed", "1"], "stream 1 is the training stream"),
        (["--from", "scratch", "--out", str(shipped_model_path())], "is the shipped toy model; add --force"),
        (["--from", str(tmp_path / "nope"), "--out", str(tmp_path / "b"), "--eval-count", "0"], "does not exist"),
    )
    for extra, needle in cases:
        res = runner.invoke(app, base + extra)
        assert res.exit_code == 1 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    res = runner.invoke(app, ["world", "finetune", "--from", "scratch", "--data", str(tmp_path / "none"),
                              "--out", str(tmp_path / "c"), "--eval-count", "0"])
    assert res.exit_code == 1 and "does not exist" in res.stderr, res.output


def test_every_finetune_option_has_help() -> None:
    import click
    import typer.main

    cmd = typer.main.get_command(app).commands["world"].commands["finetune"]  # type: ignore[attr-defined]
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, param.name

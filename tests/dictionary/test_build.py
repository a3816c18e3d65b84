"""`steer dict build`: built beside the target and swapped in whole, resumable, refusing to replace
what it should not, Ctrl-C as one line. Training, evaluation and concept building are replaced by
instant fakes that write real (tiny) files, so these tests check the orchestration in seconds."""

from __future__ import annotations

import json
import os

import pytest
import torch
from dictionary_support import random_sae
from typer.testing import CliRunner

from steerlang.cli import app
from steerlang.dictionary import api
from steerlang.dictionary.concepts import load_concept_set, save_concept_set
from steerlang.dictionary.io import WEIGHTS, save_dictionary
from steerlang.errors import InputError

SETTINGS = {"image": {"latents": 64, "k": 4, "steps": 5}, "text": {"latents": 32, "k": 2, "steps": 3}}
runner = CliRunner()


class Fakes:
    """Instant stand-ins for the slow stages; `interrupt_at` raises KeyboardInterrupt (Ctrl-C)
    when that SAE is about to be trained."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tag: str = "new") -> None:
        self.trained: list[str] = []
        self.evaluated: list[str] = []
        self.interrupt_at: str | None = None
        self.tag = tag
        monkeypatch.setattr(api, "train_dictionary", self.train)
        monkeypatch.setattr(api, "evaluate_dictionary", self.evaluate)
        monkeypatch.setattr(api, "build_concepts", self.concepts)
        monkeypatch.setattr(api, "harvested", lambda *a, **k: None)
        monkeypatch.setattr(api, "_model_key", lambda model: f"{model}-0123")

    def train(self, *, model, layer, modality, out, on_step=None, progress=True, **kw):
        name = f"layer{layer}-{modality}"
        if name == self.interrupt_at:
            raise KeyboardInterrupt
        for i in range(kw["steps"]):
            on_step(i + 1, None)
        save_dictionary(random_sae("topk", d_sae=kw["latents"], layer=layer, modality=modality), out,
                        {"training": {"seconds": 0.1, "tokens_per_s": 1000}})
        self.trained.append(name)
        return {"seconds": 0.1, "card": {"l0": 4.0, "dead_fraction": 0.0, "dense_fraction": 0.0, "n_tokens": 10}}

    def evaluate(self, path, *, model=None, **_kw):
        self.evaluated.append(path.name)
        m = "image" if path.name.endswith("image") else "text"
        return {"reconstruction": {"fvu": 0.1, "mse": 0.2, "l0": 4.0, "dead_fraction": 0.0, "dense_fraction": 0.0, "n_tokens": 10},
                "spliced": {m: {"delta_ce": 0.01, "loss_recovered": 0.9}}}

    def concepts(self, out, *, model, count, log, name):
        layers = json.loads((out / "saes.json").read_text())["layers"]
        save_concept_set(out, name=name, model=model, layers=layers, concepts=[], tensors={"background.L0": torch.zeros(2, 16)})
        (out / "concepts_report.json").write_text(json.dumps({"tag": self.tag}))
        return {"train_scenes": {"seed": 2, "count": count}, "held_out_scenes": {"seed": 3, "count": 500},
                "n_concepts": {"joint": 1, "image": 2, "text": 3}}


class Events(api.BuildEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def _build(out, fakes: Fakes | None = None, events: Events | None = None, **kw):
    return api.build_concept_set(out, count=kw.pop("count", 7), layers=[0, 1], settings=kw.pop("settings", SETTINGS),
                                 events=events or Events(), **kw)


def _old_set(out) -> dict[str, bytes]:
    """A finished concept set at `out` (what the build must not touch until it is done)."""
    out.mkdir()
    (out / "saes.json").write_text('{"saes": []}')
    (out / "concepts.json").write_text('{"old": true}')
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_interrupted_build_leaves_the_target_untouched_and_resumes(tmp_path, monkeypatch) -> None:
    out = tmp_path / "set"
    before = _old_set(out)
    fakes = Fakes(monkeypatch)
    fakes.interrupt_at = "layer1-image"
    with pytest.raises(KeyboardInterrupt):
        _build(out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    work = tmp_path / ".set.build"
    assert api.build_status(out) == {"dir": work, "finished": 2, "total": 4, "mode": "full"}
    # the rerun reuses the two finished SAEs, says so, trains the rest and swaps the result in
    fakes.interrupt_at, fakes.trained = None, []
    events = Events()
    summary = _build(out, events=events, force=True)
    assert fakes.trained == ["layer1-image", "layer1-text"]
    assert summary["reused"] == ["layer0-image", "layer0-text"] and summary["trained"] == ["layer1-image", "layer1-text"]
    assert any("reusing 2 of 4 trained SAEs (layer0-image, layer0-text)" in line for line in events.lines)
    assert not work.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    assert sorted(p.name for p in out.iterdir()) == ["concepts.json", "concepts_report.json", "eval.json", "prototypes.safetensors",
                                                     "saes", "saes.json"]
    cs = load_concept_set(out)
    assert cs.name == "set" and cs.sae(1, "text").cfg.d_sae == 32 and cs.background(0) is not None


def test_other_settings_start_over_with_a_message(tmp_path, monkeypatch) -> None:
    fakes = Fakes(monkeypatch)
    fakes.interrupt_at = "layer1-image"
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "set")
    fakes.interrupt_at, fakes.trained = None, []
    events = Events()
    _build(tmp_path / "set", events=events, count=8)
    assert fakes.trained == ["layer0-image", "layer0-text", "layer1-image", "layer1-text"]
    assert any("other settings (count 7 -> 8" in line and "starting over" in line for line in events.lines)


def test_interrupted_evaluation_keeps_its_rows(tmp_path, monkeypatch) -> None:
    fakes = Fakes(monkeypatch)
    real = fakes.evaluate

    def evaluate(path, **kw):
        if path.name == "layer1-image":
            raise KeyboardInterrupt
        return real(path, **kw)

    monkeypatch.setattr(api, "evaluate_dictionary", evaluate)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "set")
    monkeypatch.setattr(api, "evaluate_dictionary", real)
    fakes.trained, fakes.evaluated = [], []
    _build(tmp_path / "set")
    assert fakes.trained == [] and fakes.evaluated == ["layer1-image", "layer1-text"]
    assert len(json.loads((tmp_path / "set" / "eval.json").read_text())) == 4


def test_skip_saes_links_the_saes_and_rebuilds_concepts(tmp_path, monkeypatch) -> None:
    out = tmp_path / "set"
    Fakes(monkeypatch, tag="first")
    _build(out)
    weights = out / "saes" / "layer0-image" / WEIGHTS
    inode, data = os.stat(weights).st_ino, weights.read_bytes()
    fakes = Fakes(monkeypatch, tag="second")
    with pytest.raises(InputError, match="--force"):
        _build(out, skip_saes=True)
    summary = _build(out, skip_saes=True, force=True)
    assert fakes.trained == [] and summary["skip_saes"]
    assert json.loads((out / "concepts_report.json").read_text()) == {"tag": "second"}
    assert weights.read_bytes() == data and os.stat(weights).st_ino == inode  # hard-linked, not rewritten
    assert (out / "eval.json").exists() and not (tmp_path / ".set.build").exists()
    load_concept_set(out).sae(0, "image")  # the recorded digests match the linked SAEs


@pytest.mark.parametrize("case", ["shipped", "existing set", "foreign folder", "file"])
def test_refuses_what_it_must_not_replace(tmp_path, monkeypatch, case) -> None:
    fakes = Fakes(monkeypatch)
    if case == "shipped":
        out, needle = api.shipped_concept_set(), "already holds the shipped concept set"
    elif case == "existing set":
        out, needle = tmp_path / "set", "already holds a concept set, which this build would replace; add --force"
        _old_set(out)
    elif case == "foreign folder":
        out, needle = tmp_path / "home", "holds no concept set"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        out, needle = tmp_path / "f", "is a file"
        out.write_text("x")
    with pytest.raises(InputError, match=needle):
        _build(out)
    assert fakes.trained == [] and not (out.parent / f".{out.name}.build").exists()
    if case == "foreign folder":  # not even --force replaces a folder that is not a concept set
        with pytest.raises(InputError, match=needle):
            _build(out, force=True)


def test_a_second_build_of_the_same_target_is_refused(tmp_path, monkeypatch) -> None:
    import fcntl

    Fakes(monkeypatch)
    work = tmp_path / ".set.build"
    work.mkdir()
    fd = os.open(work, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another `steer dict build`"):
            _build(tmp_path / "set")
    finally:
        os.close(fd)


# -- the command ----------------------------------------------------------------------------
def test_cli_requires_out_and_refuses_the_shipped_set(monkeypatch) -> None:
    fakes = Fakes(monkeypatch)
    res = runner.invoke(app, ["dict", "build"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.stderr
    res = runner.invoke(app, ["dict", "build", "--out", str(api.shipped_concept_set())])
    err = res.stderr.strip()
    assert res.exit_code == 1 and len(err.splitlines()) == 1, err
    assert "shipped concept set" in err and "--force" in err and "Traceback" not in err
    assert fakes.trained == []


def test_cli_ctrl_c_says_what_was_kept_and_exits_130(tmp_path, monkeypatch) -> None:
    fakes = Fakes(monkeypatch)
    fakes.interrupt_at = "layer2-image"
    out = tmp_path / "set"
    res = runner.invoke(app, ["dict", "build", "--out", str(out), "--count", "7"])
    assert res.exit_code == 130, res.output
    last = res.stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: kept 4 of 10 trained SAEs in {tmp_path / '.set.build'}; {out} is untouched; "
                    "rerun the same command to resume")
    assert "Traceback" not in res.output and not out.exists()
    fakes.interrupt_at = None
    res = runner.invoke(app, ["dict", "build", "--out", str(out), "--count", "7"])
    assert res.exit_code == 0, res.output
    assert "reusing 4 of 10 trained SAEs (layer0-image, layer0-text, layer1-image, layer1-text)" in res.stderr
    assert res.stdout.splitlines()[0].startswith(f"built {out} in ") and "(6 trained, 4 reused" in res.stdout
    assert "{" not in res.stdout  # readable, not a dict
    res = runner.invoke(app, ["dict", "build", "--out", str(out), "--count", "7", "--force", "--json", "--no-eval"])
    summary = json.loads(res.stdout)
    assert summary["n_concepts"] == {"joint": 1, "image": 2, "text": 3} and summary["eval"] is None


def test_cli_ctrl_c_on_train_and_harvest(tmp_path, monkeypatch) -> None:
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train_dictionary", interrupted)
    monkeypatch.setattr(api, "harvested", interrupted)
    res = runner.invoke(app, ["dict", "train", "--out", str(tmp_path / "d"), "--layer", "0"])
    assert res.exit_code == 130 and res.stderr.strip().splitlines()[-1].startswith("interrupted: ")
    assert "--checkpoint-every" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["dict", "harvest", "--out", str(tmp_path / "a"), "--count", "5"])
    assert res.exit_code == 130 and "interrupted: nothing kept" in res.stderr


def test_cli_train_prints_a_summary_and_json_on_request(tmp_path, monkeypatch) -> None:
    res = {"out": str(tmp_path / "d"), "layer": 2, "modality": "image", "latents": 64, "k": 4, "steps": 10, "seconds": 1.5,
           "tokens_per_s": 12345, "last": {"fvu": 0.05, "l0": 4.0, "dead": 0.0},
           "card": {"n_tokens": 1000, "l0": 4.0, "dead_fraction": 0.01, "dense_fraction": 0.0}}
    monkeypatch.setattr(api, "train_dictionary", lambda **kw: res)
    out = runner.invoke(app, ["dict", "train", "--out", str(tmp_path / "d"), "--layer", "2"])
    assert out.exit_code == 0 and out.stdout.splitlines()[0] == f"wrote {tmp_path / 'd'}: layer 2 image SAE, 64 latents, k 4"
    assert "12,345 tokens/s" in out.stdout and "{" not in out.stdout
    out = runner.invoke(app, ["dict", "train", "--out", str(tmp_path / "d"), "--layer", "2", "--json"])
    assert json.loads(out.stdout) == res

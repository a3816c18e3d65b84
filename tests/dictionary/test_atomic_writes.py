"""Folders and files written whole, never half: swaps with no gap, no temp leftovers, the user's
umask, concept sets whose parts must belong together, checkpoints that fall back when truncated."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading

import pytest
import torch
from dictionary_support import random_sae

from steerlang import atomic
from steerlang.dictionary import concepts as concepts_mod
from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
from steerlang.dictionary.io import WEIGHTS, load_dictionary, save_dictionary
from steerlang.dictionary.source import ShardWriter
from steerlang.dictionary.train import TrainConfig, train_sae
from steerlang.errors import DictionaryError, InputError
from steerlang.world.io import atomic_dir

TINY = dict(d_sae=64, k=4, batch_size=64, steps=30, lr=3e-3, warmup=5, dead_window_tokens=640, log_every=5)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- replace_dir ------------------------------------------------------------------------------
def test_replace_dir_never_leaves_the_path_missing(tmp_path) -> None:
    final = tmp_path / "set"
    final.mkdir()
    (final / "v").write_text("0")
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not final.is_dir():
                missing.append(1)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(1, 60):
            new = atomic.temp_dir_beside(final)
            (new / "v").write_text(str(i))
            atomic.replace_dir(new, final)
    finally:
        stop.set()
        t.join()
    assert not missing, "the folder was missing during a swap"
    assert (final / "v").read_text() == "59" and _hidden(tmp_path) == []


def test_two_rename_fallback_recovers_the_old_folder(tmp_path, monkeypatch) -> None:
    """Where the kernel cannot exchange folders, a crash between the two renames leaves the old
    folder aside under a fixed name; the next writer or reader puts it back."""
    final = tmp_path / "d"
    save_dictionary(random_sae("relu"), final)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def crash_second(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rename(a, b)

    monkeypatch.setattr(atomic.os, "rename", crash_second)
    with pytest.raises(KeyboardInterrupt):
        save_dictionary(random_sae("topk"), final)
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    assert load_dictionary(final).cfg.architecture == "relu"  # the old one, back in place
    assert _hidden(tmp_path) == []
    # the gap itself (as after a power cut): the old folder aside, nothing at the path
    real_rename(final, tmp_path / ".d.old")
    assert load_dictionary(final).cfg.architecture == "relu"


# -- modes -----------------------------------------------------------------------------------
def test_written_files_follow_the_umask(tmp_path, umask022) -> None:
    d = save_dictionary(random_sae("topk"), tmp_path / "dict")
    assert _mode(d) == 0o755 and _mode(d / WEIGHTS) == 0o644 and _mode(d / "cfg.json") == 0o644
    with atomic_dir(tmp_path / "model") as tmp:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors alone makes 0600
    assert _mode(tmp_path / "model") == 0o755 and _mode(tmp_path / "model" / "model.safetensors") == 0o644
    w = ShardWriter(tmp_path / "acts", [0], 4, dtype=torch.float32)
    w.add({0: torch.zeros(3, 4)}, modality=torch.zeros(3), cell=torch.zeros(3), scene=torch.zeros(3), position=torch.zeros(3))
    w.close()
    assert {_mode(p) for p in (tmp_path / "acts").iterdir()} == {0o644}
    res = train_sae(torch.randn(256, 16), TrainConfig(**{**TINY, "steps": 10}, checkpoint_every=10, out_dir=str(tmp_path / "run")),
                    progress=False)
    ck = tmp_path / "run" / "checkpoints" / "step_00000010"
    assert _mode(ck) == 0o755 and _mode(ck / "state.safetensors") == 0o644 and _mode(res.dictionary_dir) == 0o755
    os.umask(0o077)
    d = save_dictionary(random_sae("topk"), tmp_path / "private")
    assert _mode(d) == 0o700 and _mode(d / WEIGHTS) == 0o600


def test_atomic_dir_failure_leaves_the_old_folder_and_no_temp(tmp_path) -> None:
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "config.json").write_text("new")
        raise KeyboardInterrupt
    assert (final / "config.json").read_text() == "old" and _hidden(tmp_path) == []


# -- concept sets ----------------------------------------------------------------------------
def _concept_set(root) -> None:
    for modality in ("image", "text"):
        save_dictionary(random_sae("topk", layer=0, modality=modality), root / "saes" / f"layer0-{modality}")
    (root / "saes.json").write_text(json.dumps({"model": "toy", "layers": [0], "modalities": ["image", "text"], "saes": [
        {"layer": 0, "modality": m, "path": f"saes/layer0-{m}"} for m in ("image", "text")]}))
    c = Concept("joint", 0, "cat", groups=(LatentGroup(0, "image", (1,), (1.0,)), LatentGroup(0, "text", (2,), (1.0,))))
    save_concept_set(root, name="t", model="toy", layers=[0], concepts=[c], tensors={"background.L0": torch.ones(4, 16)})


def test_concept_set_failure_leaves_the_old_pair_and_no_tmp(tmp_path, monkeypatch) -> None:
    _concept_set(tmp_path)
    before = {f: (tmp_path / f).read_bytes() for f in ("concepts.json", "prototypes.safetensors")}

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(concepts_mod, "save_file", boom)
    with pytest.raises(OSError):
        save_concept_set(tmp_path, name="t", model="toy", layers=[0], concepts=[], tensors={"background.L0": torch.zeros(4, 16)})
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
    assert _hidden(tmp_path) == []


def test_a_mixed_concept_set_is_refused_when_read(tmp_path) -> None:
    _concept_set(tmp_path)
    cs = load_concept_set(tmp_path)
    assert cs.background(0) is not None and cs.sae(0, "image") is not None  # a consistent set reads
    record = json.loads((tmp_path / "concepts.json").read_text())["files"]
    assert set(record) == {"prototypes.safetensors", "saes/layer0-image/sae_weights.safetensors", "saes/layer0-text/sae_weights.safetensors"}
    # prototypes of another build next to this concepts.json (a crash between the two renames)
    from safetensors.torch import save_file

    save_file({"background.L0": torch.zeros(4, 16)}, str(tmp_path / "prototypes.safetensors"))
    with pytest.raises(DictionaryError, match="mixes files of two builds"):
        load_concept_set(tmp_path).background(0)
    # an SAE retrained in place while concepts.json stayed old (the reported Ctrl-C mix)
    save_dictionary(random_sae("topk", seed=5, layer=0, modality="text"), tmp_path / "saes" / "layer0-text")
    with pytest.raises(DictionaryError, match=r"layer0-text.*steer dict build --out"):
        load_concept_set(tmp_path).sae(0, "text")


# -- checkpoints -----------------------------------------------------------------------------
def test_resume_falls_back_from_a_truncated_checkpoint(acts, tmp_path) -> None:
    cfg = dict(TINY, checkpoint_every=10, keep_checkpoints=3)
    full = train_sae(acts, TrainConfig(**cfg, out_dir=str(tmp_path / "a")), progress=False)
    ck = tmp_path / "b" / "checkpoints"
    ck.mkdir(parents=True)
    for step in ("step_00000010", "step_00000020"):
        shutil.copytree(tmp_path / "a" / "checkpoints" / step, ck / step)
    data = (ck / "step_00000020" / "state.safetensors").read_bytes()
    (ck / "step_00000020" / "state.safetensors").write_bytes(data[: len(data) // 2])  # cut short by a crash
    warnings: list[str] = []
    resumed = train_sae(acts, TrainConfig(**cfg, out_dir=str(tmp_path / "b")), resume=True, progress=False, warn=warnings.append)
    assert resumed.start_step == 10
    assert len(warnings) == 1 and "step_00000020" in warnings[0] and "falling back to the previous checkpoint" in warnings[0]
    assert all(torch.equal(v, resumed.sae.state_dict()[k]) for k, v in full.sae.state_dict().items())
    # only corrupt checkpoints: start over, saying so; other settings are still an error, not a fallback
    shutil.rmtree(ck)
    shutil.copytree(tmp_path / "a" / "checkpoints" / "step_00000020", ck / "step_00000020")
    (ck / "step_00000020" / "state.json").write_text('{"step": 2')
    warnings.clear()
    assert train_sae(acts, TrainConfig(**cfg, out_dir=str(tmp_path / "b")), resume=True, progress=False,
                     warn=warnings.append).start_step == 0
    assert any("training from step 0" in w for w in warnings)
    with pytest.raises(InputError, match="different settings"):
        train_sae(acts, TrainConfig(**{**cfg, "lr": 1e-2}, out_dir=str(tmp_path / "b")), resume=True, progress=False)


# -- harvests --------------------------------------------------------------------------------
def test_an_interrupted_harvest_leaves_nothing_at_the_path(tmp_path, monkeypatch) -> None:
    from steerlang.dictionary import api
    from steerlang.dictionary.harvest import harvest
    from steerlang.world import model as world_model

    proc = world_model.build_processor()
    bundle = world_model.ModelBundle("tiny", world_model.build_toy_model(len(proc.tokenizer), seed=1).eval(), proc)
    monkeypatch.setattr(world_model, "load_model", lambda *_a, **_k: bundle)

    def stop(_n: int) -> None:
        raise KeyboardInterrupt  # after the first batch: complete shards are on disk, the manifest is not

    small = {"batch_size": 2, "shard_rows": 60}
    monkeypatch.setattr(api, "harvest", lambda b, out, **kw: harvest(b, out, **{**kw, **small, "on_batch": stop}))
    with pytest.raises(KeyboardInterrupt):
        api.harvested("toyworld", seed=2, count=5, acts_dir=tmp_path / "acts")
    # nothing at the path; the hidden partial folder keeps the complete shards for the rerun to resume
    assert sorted(p.name for p in tmp_path.iterdir()) == [".acts.partial"]

    monkeypatch.setattr(api, "harvest", lambda b, out, **kw: harvest(b, out, **{**kw, **small}))
    assert (api.harvested("toyworld", seed=2, count=5, acts_dir=tmp_path / "acts") / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]
    # a folder of the user's that is not a harvest is refused, never deleted
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no finished harvest"):
        api.harvested("toyworld", seed=2, count=5, acts_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

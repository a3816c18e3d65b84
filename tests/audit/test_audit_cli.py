"""`steer audit` end to end: the JSON fields, the HTML page, filtering, resuming, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import merge_corpora
from typer.testing import CliRunner

from steerlang.audit import audit
from steerlang.cli import app
from steerlang.errors import InputError

runner = CliRunner()


def _one_line_error(res) -> str:  # noqa: ANN001
    assert res.exit_code == 1, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_json_html_and_filtering(toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    src = toy_corpus("mismatch", seed=8101, count=40, mismatch_rate=0.3)
    corpus = merge_corpora(tmp_path / "corpus", [("imgs", src)])  # images in a subfolder
    meta = [json.loads(x) for x in (corpus / "metadata.jsonl").read_text().splitlines()]
    (corpus / "metadata.jsonl").write_text("".join(json.dumps({**m, "source": f"s{i}"}) + "\n" for i, m in enumerate(meta)))
    out = tmp_path / "out"
    res = runner.invoke(app, ["audit", str(corpus), "--json", str(out / "r.json"), "--html", str(out / "r.html"),
                              "--keep", "0.5", "--out-data", str(out / "kept"), "--saev", "pairs", "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    assert "40 samples audited" in res.output
    j = json.loads((out / "r.json").read_text())
    assert j["n_samples"] == 40 and len(j["samples"]) == 40 and j["layer"] == 2 and j["text_layer"] == 0
    s = j["samples"][0]
    assert {"file_name", "row", "text", "mismatch", "l0", "co_l0", "cosine", "seen", "named", "seen_not_named",
            "named_not_seen"} <= set(s)
    assert s["file_name"].startswith("imgs/")
    assert all({"concept", "image", "text"} <= set(c) for c in j["coverage"])
    assert all({"concept", "gap", "image", "text"} <= set(g) for g in j["gaps"])
    assert {p["modality"] for p in j["cooccurrence"]} == {"image", "text"}
    assert all({"a", "b", "lift", "lift_low", "lift_high", "n_ab", "n_a", "n_b", "expected", "pmi", "rank"} <= set(p)
               for p in j["cooccurrence"])
    assert j["saev"]["kind"] == "aligned_pairs" and j["data"]["bad_rows"] == 0

    page = (out / "r.html").read_text()
    assert page.count("<svg") >= 6 and "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<script" not in page

    from steerlang.data import open_dataset

    kept = open_dataset(out / "kept")
    rows = list(kept)
    assert len(rows) == 20 and kept.report.n_bad == 0
    by_name = {x["file_name"]: x for x in j["samples"]}
    best = sorted(j["samples"], key=lambda x: (x["mismatch"], x["row"]))[:20]
    assert {r.name for r in rows} == {x["file_name"] for x in best}
    assert max(by_name[r.name]["mismatch"] for r in rows) <= min(x["mismatch"] for x in j["samples"] if x not in best)
    assert all(r.meta["source"].startswith("s") and r.text == by_name[r.name]["text"] for r in rows)
    assert not list(out.glob(".*audit-work"))  # the work folder is gone once the report is written


def test_resume_after_an_interruption(toy, toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    corpus = toy_corpus("mismatch", seed=8101, count=40, mismatch_rate=0.3)
    fresh = audit(corpus, *toy, saev="pairs", batch_size=8)
    work = tmp_path / "work"

    def stop(rows: int, _total: int | None) -> None:
        if rows > 26:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit(corpus, *toy, saev="pairs", batch_size=8, work_dir=work, checkpoint_s=0.0, on_progress=stop)
    saved = len((work / "samples.jsonl").read_text().splitlines())
    assert 8 <= saved < 40
    resumed = audit(corpus, *toy, saev="pairs", batch_size=8, work_dir=work, checkpoint_s=0.0)
    assert resumed.scored == 40 - saved
    assert resumed.to_json()["samples"] == fresh.to_json()["samples"]
    assert resumed.to_json()["cooccurrence"] == fresh.to_json()["cooccurrence"]
    # Other inputs start over.
    other = audit(corpus, *toy, layer=1, saev="none", batch_size=8, work_dir=work)
    assert other.scored == 40


def test_unreadable_images_are_counted_and_listed(toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    corpus = tmp_path / "c"
    shutil.copytree(toy_corpus("without-fish", seed=8102, count=30, without_kinds=["fish"]), corpus)
    (corpus / "0003.png").write_bytes(b"not a png")
    (corpus / "0007.png").unlink()
    res = runner.invoke(app, ["audit", str(corpus), "--saev", "none", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "28 samples audited" in res.output and "unreadable_image: 1" in res.output and "0003.png" in res.output
    j = json.loads((tmp_path / "r.json").read_text())
    assert j["data"]["bad"] == {"missing_image": 1, "unreadable_image": 1}
    assert j["data"]["examples"]["unreadable_image"][0]["name"] == "0003.png"


def test_bad_input_is_one_line(toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    _one_line_error(runner.invoke(app, ["audit", str(empty)]))

    src = toy_corpus("without-fish", seed=8102, count=30, without_kinds=["fish"])
    nocap = tmp_path / "nocap"
    shutil.copytree(src, nocap)
    rows = [json.loads(x) for x in (nocap / "metadata.jsonl").read_text().splitlines()]
    (nocap / "metadata.jsonl").write_text("".join(json.dumps({"file_name": r["file_name"], "text": " "}) + "\n" for r in rows))
    assert "no captions" in _one_line_error(runner.invoke(app, ["audit", str(nocap), "--saev", "none"]))
    (nocap / "metadata.jsonl").write_text("".join(json.dumps({"file_name": r["file_name"]}) + "\n" for r in rows))
    assert "text" in _one_line_error(runner.invoke(app, ["audit", str(nocap)]))

    assert "--keep" in _one_line_error(runner.invoke(app, ["audit", str(src), "--keep", "0.5"]))
    assert "--by" in _one_line_error(runner.invoke(app, ["audit", str(src), "--by", "x"]))
    assert "overlaps" in _one_line_error(runner.invoke(app, ["audit", str(src), "--saev", "none", "--keep", "0.5",
                                                             "--out-data", str(src / "sub")]))


def test_a_dictionary_of_another_model_is_refused(toy, toy_corpus, tmp_path: Path) -> None:  # noqa: ANN001
    import torch

    from steerlang.dictionary.concepts import Concept, LatentGroup, load_concept_set, save_concept_set
    from steerlang.dictionary.io import save_dictionary
    from steerlang.dictionary.sae import SAEConfig, make_sae

    root = tmp_path / "small"
    entries = []
    for m in ("image", "text"):
        sae = make_sae(SAEConfig(architecture="relu", d_in=32, d_sae=16, layer=0, modality=m))
        torch.nn.init.normal_(sae.W_enc)
        save_dictionary(sae, root / f"saes/layer0-{m}")
        entries.append({"layer": 0, "modality": m, "path": f"saes/layer0-{m}"})
    (root / "saes.json").write_text(json.dumps({"model": "tiny", "layers": [0], "modalities": ["image", "text"], "saes": entries}))
    groups = tuple(LatentGroup(0, m, (1,), (1.0,)) for m in ("image", "text"))  # type: ignore[arg-type]
    save_concept_set(root, name="small", model="tiny", layers=[0], concepts=[Concept("joint", 0, "cat", (), groups)])
    corpus = toy_corpus("without-fish", seed=8102, count=30, without_kinds=["fish"])
    with pytest.raises(InputError, match="size 32 but the model's are 128"):
        audit(corpus, toy[0], load_concept_set(root), layer=0)
    msg = _one_line_error(runner.invoke(app, ["audit", str(corpus), "--dictionary", str(root), "--layer", "0"]))
    assert "another model" in msg


def test_the_audit_package_does_not_import_the_toy_world() -> None:
    code = ("import sys, steerlang.audit.run, steerlang.audit.report, steerlang.audit.html, steerlang.audit.filter, "
            "steerlang.audit.stats, steerlang.audit.readers, steerlang.audit.forward, steerlang.runtime.adapters; "
            "print([m for m in sys.modules if m.startswith('steerlang.world')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    root = Path(__file__).resolve().parents[2] / "steerlang" / "audit"
    assert not [p.name for p in root.glob("*.py") if "steerlang.world" in p.read_text()]

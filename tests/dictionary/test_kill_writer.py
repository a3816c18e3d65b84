"""A writer killed at a random point (SIGKILL: no `finally`, no cleanup) leaves the old dictionary or
the new one at the path, whole; never a missing folder, a mix, or a half-written file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from steerlang.dictionary.io import load_dictionary

WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    import steerlang.atomic as atomic
    from steerlang.dictionary.io import save_dictionary
    from steerlang.dictionary.sae import SAEConfig, make_sae

    out, exchange = Path(sys.argv[1]), sys.argv[2] == "exchange"
    if not exchange:
        atomic._exchange = lambda a, b: False  # the two-rename fallback of systems without renameat2
    saes = []
    for v in (1.0, 2.0):
        sae = make_sae(SAEConfig(architecture="relu", d_in=64, d_sae=512, layer=0, modality="image", model_name="t"))
        with torch.no_grad():
            for p in sae.parameters():
                p.fill_(v)
        saes.append(sae)
    save_dictionary(saes[0], out)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        save_dictionary(saes[i % 2], out)
""")


@pytest.mark.parametrize("mode", ["exchange", "two-renames"])
def test_a_killed_writer_leaves_a_whole_dictionary(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "sae"
    rng = random.Random(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(out), mode], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        sae = load_dictionary(out)  # recovers a two-rename swap cut short
        values = {float(p.flatten()[0]) for p in sae.state_dict().values()}
        assert values in ({1.0}, {2.0}), values
        assert all(bool((p == next(iter(values))).all()) for p in sae.state_dict().values())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("sae", "writer.py")]
    # a killed writer cannot clean up its temporary folder; the next writer of this path removes it
    assert all(name.startswith(".sae.") for name in leftovers), leftovers
    assert torch.is_tensor(load_dictionary(out).W_enc)

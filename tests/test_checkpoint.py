"""Checkpoints (trainers/checkpoint.py, docs/design.md §6): a run killed with SIGKILL and resumed ends bit-identical
to an uninterrupted one (sequential; presample, which equals sequential bit for bit), a pipelined mspipe run
resumes with its staleness bound intact, damaged and foreign checkpoints are refused, and only complete
checkpoints count."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mspipe_bench.cli import main as cli_main
from mspipe_bench.errors import UserError
from mspipe_bench.harness.run import RunSpec, run_context
from mspipe_bench.trainers.checkpoint import META, STATE, Checkpointer, complete_checkpoints

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:events=2400,nodes=150,seed=5"
# 2 epochs of 17 training iterations (TGN: dropout draws from torch's generator in every T)
OPTIONS = dict(model="tgn", dataset=DATA, epochs=2, batch_size=100, seed=3)
EVERY = 3
FINAL = "e0002-i0000000"  # the checkpoint after the last epoch: the trained state before the best is restored
TIMING = {"seconds", "train_events_per_s", "wall_end_s", "times", "bubble_s", "mitigation_s"}

_spec = importlib.util.spec_from_file_location("state_hash", ROOT / "benchmarks" / "state_hash.py")
state_hash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state_hash)


def digest(ckpt: Path) -> str:
    """Hash of a checkpoint's training state: parameters, optimiser, memory and mailbox, generators, the best
    epoch's state, and the per-epoch and per-iteration records without their timings."""
    st = torch.load(ckpt / STATE, weights_only=True)
    loop = st["loop"]
    h = hashlib.sha256()
    state_hash._update(h, {k: st[k] for k in ("model", "optimizer", "memory", "torch_rng", "version_base")})
    state_hash._update(h, {k: loop[k] for k in ("epoch", "i", "best_ap", "best_state", "train_events")})
    state_hash._update(h, [{k: v for k, v in r.items() if k not in TIMING} for r in st["epochs"] + st["iterations"]])
    return h.hexdigest()[:16]


def scores(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if k.startswith(("val_", "test_", "best_"))}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted sequential run with checkpoints: its final checkpoint's digest and its result."""
    d = tmp_path_factory.mktemp("baseline") / "ckpt"
    _, result = run_context(RunSpec(**OPTIONS), checkpoints=Checkpointer(d, EVERY))
    return d, digest(d / FINAL), result


def run_cli_killed(tmp_path: Path, trainer: str) -> tuple[Path, Path]:
    """Start ``run --checkpoint-dir D --checkpoint-every 3`` in a subprocess, SIGKILL it as soon as its first
    checkpoint is complete; returns (D, the result path it would have written)."""
    d, out = tmp_path / "ckpt", tmp_path / "result.json"
    args = [sys.executable, "-m", "mspipe_bench", "run", "--quiet", "--out", str(out), "--checkpoint-dir", str(d),
            "--checkpoint-every", str(EVERY), "--trainer", trainer,
            *(x for k, v in OPTIONS.items() for x in (f"--{k.replace('_', '-')}", str(v)))]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not complete_checkpoints(d):
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "the run completed before it was killed"
    return d, out


def check_resumed(result: dict, d: Path) -> dict:
    assert result["status"] == "complete"
    resumed = result["checkpoint"]["resumed"]
    assert len(resumed) == 1 and Path(resumed[0]["checkpoint"]).parent == d
    assert (resumed[0]["epoch"], resumed[0]["iteration"]) < (2, 0)  # resumed before the end of training
    n = [r["epoch"] for r in result["iterations"]]
    assert n == [0] * 17 + [1] * 17  # every iteration once, in order
    return resumed[0]


def test_sigkill_then_resume_is_bit_identical_sequential(tmp_path, baseline, capsys):
    _, base_digest, base_result = baseline
    d, out = run_cli_killed(tmp_path, "sequential")
    proc = subprocess.run([sys.executable, "-m", "mspipe_bench", "run", "--quiet", "--resume", str(d)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())  # where the first run would have written it
    where = check_resumed(result, d)
    assert where["iteration"] > 0 or where["epoch"] > 0
    assert digest(d / FINAL) == base_digest
    assert scores(result) == scores(base_result)
    assert [r["loss"] for r in result["iterations"]] == [r["loss"] for r in base_result["iterations"]]
    assert result["config"]["key"] == base_result["config"]["key"]  # checkpoint options are not in the key


def test_checkpointing_changes_nothing_numerically(baseline):
    _, _, base_result = baseline
    _, plain = run_context(RunSpec(**OPTIONS))
    assert scores(plain) == scores(base_result)
    assert [r["loss"] for r in plain["iterations"]] == [r["loss"] for r in base_result["iterations"]]


@pytest.mark.parametrize("trainer", ["presample", "mspipe"])
def test_pipelined_sigkill_then_resume(tmp_path, baseline, trainer):
    _, base_digest, base_result = baseline
    d, _ = run_cli_killed(tmp_path, trainer)
    ckpt = Checkpointer(d, resume=True)
    _, result = run_context(RunSpec(**ckpt.spec_values()), checkpoints=ckpt)
    check_resumed(result, d)
    for r in result["iterations"]:  # the bound held at every iteration, also across the boundaries
        assert 0 <= r["observed_staleness"] <= r["k"] - 1 and r["k"] <= 4
    if trainer == "presample":  # exact: bit-identical to the uninterrupted sequential run
        assert digest(d / FINAL) == base_digest
        assert scores(result) == scores(base_result)
    else:
        assert result["metrics"]["max_k"] >= 1 and len(complete_checkpoints(d)) == 2


def _copy(baseline, tmp_path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(baseline[0], d)
    return d


@pytest.mark.parametrize("change, message", [
    (dict(model="jodie"), r"run option model is 'tgn' there, 'jodie' here"),
    (dict(dataset=DATA.replace("seed=5", "seed=6")), r"run option dataset is"),
    (dict(trainer="presample"), r"run option trainer is 'sequential' there, 'presample' here"),
    (dict(overrides=["gnn.heads=4"]), r"run option overrides"),
])
def test_foreign_checkpoint_is_refused(baseline, tmp_path, change, message):
    d = _copy(baseline, tmp_path)
    with pytest.raises(UserError, match=rf"checkpoint {d}/{FINAL}/meta.json: written by another run: {message}"):
        run_context(RunSpec(**{**OPTIONS, **change}), checkpoints=Checkpointer(d, resume=True))


@pytest.mark.parametrize("field, path, value, message", [
    ("model_config", ("memory", "dim"), 7, r"model config memory.dim is 7 there, 100 here"),
    ("dataset", ("hash",), "0" * 16, r"dataset fingerprint hash is '0{16}' there"),
])
def test_changed_model_config_or_dataset_is_refused(baseline, tmp_path, field, path, value, message):
    d = _copy(baseline, tmp_path)
    meta = json.loads((d / FINAL / META).read_text())
    node = meta[field]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    (d / FINAL / META).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=rf"meta.json: written by another run: {message}"):
        run_context(RunSpec(**OPTIONS), checkpoints=Checkpointer(d, resume=True))


def test_damaged_checkpoint_is_refused(baseline, tmp_path):
    d = _copy(baseline, tmp_path)
    state = d / FINAL / STATE
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError, match=rf"checkpoint {state}: size \d+ bytes, expected {len(data)}"):
        run_context(RunSpec(**OPTIONS), checkpoints=Checkpointer(d, resume=True))
    state.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # one bit flipped
    with pytest.raises(UserError, match=rf"checkpoint {state}: SHA-256 differs"):
        run_context(RunSpec(**OPTIONS), checkpoints=Checkpointer(d, resume=True))
    (d / FINAL / META).write_text("{")
    with pytest.raises(UserError, match=rf"checkpoint {d / FINAL / META}: unreadable"):
        Checkpointer(d, resume=True)
    (d / FINAL / META).write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(UserError, match="format is 'something/else'"):
        Checkpointer(d, resume=True)


def test_cli_refusals_are_one_line_exit_2(baseline, tmp_path, capsys):
    d = _copy(baseline, tmp_path)
    assert cli_main(["run", "--quiet", "--resume", str(d), "--model", "jodie"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "written by another run: run option model" in err
    assert cli_main(["run", "--quiet", "--checkpoint-dir", str(d), "--dataset", DATA]) == 2
    assert f"--checkpoint-dir {d}: already holds checkpoints" in capsys.readouterr().err
    assert cli_main(["run", "--quiet", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no complete checkpoint there (no such directory)" in capsys.readouterr().err
    assert cli_main(["run", "--quiet", "--checkpoint-every", "3"]) == 2
    assert "--checkpoint-every: needs --checkpoint-dir" in capsys.readouterr().err


def test_only_complete_checkpoints_count(baseline, tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    shutil.copytree(baseline[0] / FINAL, d / "e0001-i0000003")
    newer = d / "e0001-i0000006"  # newer but without its completion marker (meta.json)
    shutil.copytree(baseline[0] / FINAL, newer)
    (newer / META).unlink()
    shutil.copytree(baseline[0] / FINAL, d / ".tmp-e0001-i0000009-123")  # a killed writer's temporary directory
    assert complete_checkpoints(d) == [d / "e0001-i0000003"]
    assert Checkpointer(d, resume=True).path == d / "e0001-i0000003"
    shutil.rmtree(d / "e0001-i0000003")
    with pytest.raises(UserError, match="no complete checkpoint there"):
        Checkpointer(d, resume=True)
    Checkpointer(d)  # incomplete ones do not block a new run in the directory


def test_segments():
    ck = Checkpointer("unused", every=3)
    assert ck.segments(8, 0) == [(0, 3), (3, 6), (6, 8)]
    assert ck.segments(8, 3) == [(3, 6), (6, 8)]
    assert ck.segments(6, 0) == [(0, 3), (3, 6)]
    assert Checkpointer("unused").segments(8, 0) == [(0, 8)]

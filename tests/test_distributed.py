"""Data-parallel training (docs/design.md §7) on spawned local ranks and through torchrun: W=2 against one
process, determinism, the staleness bound on every rank, failures, a killed rank, Ctrl-C, torchrun launches.

The rank functions below run in spawned processes (they are pickled by reference, so they live at module
level); every spawned process is ended by the launcher or by the test (checked by pid)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mspipe_bench.harness.launch import RankFailure, spawn
from mspipe_bench.trainers.distributed import share

DATASET = "synthetic:nodes=150,events=3600,seed=5"
BATCH = 101  # odd: the ranks' shares differ by one event
NO_DROPOUT = ["gnn.dropout=0", "gnn.attn_dropout=0"]
MODELS = ("tgn", "jodie", "apan", "tgat")
ITERS = 24
REPO = Path(__file__).resolve().parents[1]


def _context(model: str, seed: int = 3, mitigation: bool = False, overrides=()):
    from mspipe_bench.data.loaders import load_dataset
    from mspipe_bench.models.config import load_config
    from mspipe_bench.models.mitigation import MitigationConfig
    from mspipe_bench.stages import make_context

    graph = load_dataset(DATASET)
    cfg = load_config(model, [f"train.batch_size={BATCH}", *NO_DROPOUT, *overrides])
    return graph, make_context(graph, cfg, seed=seed, mitigation=MitigationConfig(enabled=mitigation))


def train_state(drank, models=MODELS, trainer="sequential", iters=ITERS, staleness=1, hook=None, overrides=(),
                frozen=False):
    """Train ``iters`` iterations of each model and evaluate on val; the parameters, memory, losses and
    validation metrics as numpy (runs in a rank, or in the test process with ``drank=None``). ``frozen``: the
    optimiser step does nothing (the state then follows the same trajectory at any W) and the gradient each
    iteration's T produced is recorded."""
    from mspipe_bench.trainers.evaluate import evaluate
    from mspipe_bench.trainers.executor import Executor
    from mspipe_bench.trainers.rules import make_schedule

    torch.set_num_threads(1)
    out = {}
    for model in models:
        graph, ctx = _context(model, mitigation=trainer == "mspipe", overrides=overrides)
        if drank is not None:
            drank.attach(ctx)
        ctx.hook = hook
        grads = []
        if frozen:
            ctx.optimizer.step = lambda *a, **k: None

            def record_gradient(stage, b, params=list(ctx.model.parameters())):
                if stage == "U" and b.phase == "train":  # T(b.i) has just finished (sequential)
                    grads.append(torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.reshape(-1)
                                            for p in params]).numpy().copy())

            ctx.hook = record_gradient
        split = graph.split()
        records = Executor(ctx, make_schedule(trainer, staleness=staleness)).run_epoch(
            ctx.batches("train", 0, split.train_end)[:iters])
        val = evaluate(ctx, "val", split.val.start, split.val.stop)
        snap = ctx.store.snapshot()
        out[model] = {
            "params": {k: v.numpy().copy() for k, v in ctx.model.state_dict().items()},
            "memory": {k: snap[k].numpy().copy() for k in ("mem", "mem_ts", "mail", "mail_ts", "mail_mask")},
            "version": snap["version"],
            "loss": np.array([r.loss for r in records]),
            "grads": grads,
            "k": [r.k for r in records],
            "observed": [r.observed_staleness for r in records],
            "val": val,
        }
    return out


def assert_states(a: dict, b: dict, exact: bool, what: str) -> None:
    def same(x, y, name):
        if exact:
            assert np.array_equal(x, y), f"{what}: {name} differs"
        else:
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=f"{what}: {name}")

    assert a["version"] == b["version"]
    for name in a["params"]:
        same(a["params"][name], b["params"][name], f"parameter {name}")
    for name in a["memory"]:
        same(a["memory"][name], b["memory"][name], f"memory {name}")
    same(a["loss"], b["loss"], "losses")
    for key in ("ap", "auc", "ap_global", "auc_global"):
        if exact:
            assert a["val"][key] == b["val"][key], f"{what}: val {key}"
        else:
            assert abs(a["val"][key] - b["val"][key]) < 1e-4, f"{what}: val {key}"


def test_share_is_contiguous_and_balanced():
    for lo, hi, world in [(0, 101, 2), (5, 12, 3), (0, 1, 2), (10, 10, 4), (0, 600, 2)]:
        parts = [share(lo, hi, r, world) for r in range(world)]
        assert parts[0][0] == lo and parts[-1][1] == hi
        assert all(parts[r][1] == parts[r + 1][0] for r in range(world - 1))
        sizes = [b - a for a, b in parts]
        assert max(sizes) - min(sizes) <= 1


RECENT = ["sampling.strategy=recent"]  # TGAT's preset samples uniformly: see test_uniform_sampling_differs


@pytest.fixture(scope="module")
def w2_frozen():
    values, interrupted = spawn(train_state, 2, (MODELS, "sequential", ITERS, 1, None, RECENT, True))
    assert not interrupted
    return values


@pytest.fixture(scope="module")
def w2_trained():
    values, _ = spawn(train_state, 2)
    return values


def test_w2_equals_one_process_for_every_model(w2_frozen):
    """With the parameters held fixed (the optimiser step does nothing) the state follows the same
    trajectory at any W, so every iteration can be compared: over 24 iterations the memory, mailbox and the
    validation AP/AUC (per-batch means and whole split) of two ranks are bit-identical to one process's; each
    iteration's averaged gradient and the global loss equal one process's up to reduction order."""
    one = train_state(None, overrides=RECENT, frozen=True)
    for model in MODELS:
        a, b = w2_frozen[0][model], one[model]
        assert a["version"] == b["version"] and (a["version"] > ITERS or model == "tgat")  # + val batches
        for name in a["memory"]:
            assert np.array_equal(a["memory"][name], b["memory"][name]), f"{model}: memory {name}"
        assert a["val"] == b["val"], model
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6, atol=1e-6, err_msg=model)
        assert len(a["grads"]) == len(b["grads"]) == ITERS
        for i, (ga, gb) in enumerate(zip(a["grads"], b["grads"])):
            scale = np.abs(gb).max()
            assert scale > 0 and np.abs(ga - gb).max() <= 1e-4 * scale, f"{model}: gradient of iteration {i}"
        assert_states(w2_frozen[0][model], w2_frozen[1][model], exact=True, what=f"{model} rank 0 vs rank 1")


def test_w2_trains_identical_replicas(w2_trained):
    """Training for real (each preset as configured): both ranks hold bit-identical parameters, memory and
    mailbox, and report the same losses and validation metrics."""
    r0, r1 = w2_trained
    for model in MODELS:
        assert_states(r0[model], r1[model], exact=True, what=f"{model} rank 0 vs rank 1")
        assert (r0[model]["memory"]["mem_ts"] > 0).any() or model == "tgat"


def test_w2_is_deterministic_and_presample_equals_sequential(w2_trained):
    """Same seed, same W: bit-identical (a second run); presample at W=2 equals sequential at W=2 bit for
    bit for every model, as it does in one process."""
    pre, _ = spawn(train_state, 2, (MODELS, "presample"))
    for model in MODELS:
        assert_states(pre[0][model], w2_trained[0][model], exact=True, what=f"{model} presample vs sequential")
    again, _ = spawn(train_state, 2, (("tgn",),))
    assert_states(again[0]["tgn"], w2_trained[0]["tgn"], exact=True, what="tgn W=2 run twice")


def test_uniform_sampling_differs_only_in_the_sampled_neighbours():
    """With uniform neighbour sampling a rank draws its roots' neighbours from the global batch's generator
    after the global negatives, so the neighbours (not the negatives) differ from one process's: TGAT's losses
    then differ, while with recent sampling (above) they agree."""
    one = train_state(None, models=("tgat",), iters=3)
    two, _ = spawn(train_state, 2, (("tgat",), "sequential", 3))
    assert not np.allclose(one["tgat"]["loss"][1:], two[0]["tgat"]["loss"][1:], rtol=1e-5)


# ---------------------------------------------------------------------------------------------- the bound
class RandomDelays:
    """Stage hook: random sleeps in T and U (seeded per rank), so the ranks' pipelines drift apart."""

    def __init__(self, seed: int):
        self.seed, self.rnd, self.lock = seed, None, threading.Lock()

    def __getstate__(self):
        return {"seed": self.seed}

    def __setstate__(self, state):
        self.__init__(state["seed"])

    def __call__(self, stage, b):
        if self.rnd is None:
            self.rnd = random.Random(self.seed * 100 + torch.distributed.get_rank())
        with self.lock:
            d = self.rnd.random() * (0.008 if stage in "TU" else 0.002)
        time.sleep(d)


def stale_runs(drank):
    return {trainer: train_state(drank, ("tgn",), trainer, staleness=3, hook=RandomDelays(5))["tgn"]
            for trainer in ("fixed-staleness", "mspipe")}


def test_staleness_bound_holds_on_every_rank_under_random_delays():
    """fixed-staleness K=3 and mspipe on two ranks whose stages are delayed at random, differently per rank:
    on every rank each iteration's observed staleness stays within its bound, and the bound k(i) is the same
    on both ranks."""
    (r0, r1), _ = spawn(stale_runs, 2)
    for trainer in ("fixed-staleness", "mspipe"):
        assert r0[trainer]["k"] == r1[trainer]["k"], trainer
        for rank in (r0, r1):
            ks, observed = rank[trainer]["k"], rank[trainer]["observed"]
            assert len(ks) == ITERS
            assert all(0 <= o <= k - 1 for o, k in zip(observed, ks)), (trainer, ks, observed)
        assert trainer == "mspipe" or set(r0[trainer]["k"]) == {3}
    assert max(r0["mspipe"]["k"]) >= 2  # the bound did allow staleness (it is not trivially 1)


# ---------------------------------------------------------------------------------------------- faults
def processes_below(pid: int) -> set[int]:
    """Live (non-zombie) descendants of ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class RaiseAt:
    """Stage hook: raise in ``stage`` of iteration ``i`` on rank ``rank``."""

    def __init__(self, rank: int, stage: str, i: int):
        self.rank, self.stage, self.i = rank, stage, i

    def __call__(self, stage, b):
        if stage == "T":
            time.sleep(0.002)
        if stage == self.stage and b.i == self.i and b.phase == "train" and \
                torch.distributed.get_rank() == self.rank:
            raise RuntimeError("injected")


@pytest.mark.parametrize("trainer,stage", [("sequential", "U"), ("mspipe", "T")])
def test_exception_on_rank_1_stops_every_rank(trainer, stage):
    before = processes_below(os.getpid())
    t0 = time.monotonic()
    with pytest.raises(RankFailure) as info:
        spawn(train_state, 2, (("tgn",), trainer, ITERS, 1, RaiseAt(1, stage, 5)))
    assert time.monotonic() - t0 < 30
    text = str(info.value)
    assert text.startswith(f"rank 1 of 2 failed: stage {stage} ") and "train iteration 5" in text
    assert "injected" in text
    assert processes_below(os.getpid()) <= before


class Launched:
    """``run --nprocs 2`` in a subprocess, training many epochs with progress bars (rank 0's, on stderr)."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mspipe_bench", "run", "--dataset", DATASET, "--batch-size", str(BATCH),
             "--nprocs", "2", "--epochs", "1000", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.err = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while chunk := self.proc.stderr.read1(4096):
            self.err += chunk

    def ranks_training(self, timeout: float = 90.0) -> list[int]:
        """The pids of the two ranks, once rank 0 has finished its first epoch (rank 1 is the younger)."""
        deadline = time.monotonic() + timeout
        while b"epoch 2/1000" not in self.err:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.decode()[-2000:]
            time.sleep(0.2)
        ranks = sorted((p for p in processes_below(self.proc.pid)
                        if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()),
                       key=lambda p: int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[19]))
        assert len(ranks) == 2
        return ranks

    def wait(self, timeout: float) -> tuple[str, str]:
        try:
            out = self.proc.stdout.read() if self.proc.wait(timeout=timeout) is not None else ""
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        return out.decode(), self.err.decode()


def test_killed_rank_stops_the_run(tmp_path):
    """SIGKILL on rank 1: the launcher names it and exits non-zero within 60 s, and no rank is left."""
    run = Launched("--out", str(tmp_path / "r.json"))
    ranks = run.ranks_training()
    os.kill(ranks[1], signal.SIGKILL)
    t0 = time.monotonic()
    _, err = run.wait(timeout=60)
    assert time.monotonic() - t0 < 60
    assert run.proc.returncode not in (0, None)
    assert "rank 1 of 2 was killed by SIGKILL" in err
    assert not any(alive(p) for p in ranks)


def test_ctrl_c_stops_every_rank_and_keeps_the_partial_result(tmp_path):
    out = tmp_path / "r.json"
    run = Launched("--trainer", "mspipe", "--out", str(out))
    ranks = run.ranks_training()
    run.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    stdout, err = run.wait(timeout=60)
    assert time.monotonic() - t0 < 30
    assert run.proc.returncode == 130, err
    result = json.loads(out.read_text())
    assert result["status"] == "interrupted" and result["config"]["world_size"] == 2
    assert result["epochs"] and result["iterations"] and "test_ap" not in result["metrics"]
    assert "[interrupted]" in stdout
    assert not any(alive(p) for p in ranks)


# ---------------------------------------------------------------------------------------------- torchrun
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--local-addr", "127.0.0.1", *args, "-m",
            "mspipe_bench", "run", "--dataset", DATASET, "--batch-size", str(BATCH), "--quiet", "--epochs", "2",
            "--max-iterations", "10", "--set", "gnn.dropout=0"]


def test_torchrun_one_node_and_two_nodes_give_the_same_result(tmp_path):
    """torchrun with 2 processes on one node, and two torchrun invocations as two "nodes" (--nnodes 2, loopback
    rendezvous) run the same code path: identical results (rank 0 writes them; world_size 2)."""
    one_node = tmp_path / "one.json"
    port = free_port()
    subprocess.run(torchrun("--nproc-per-node", "2", "--rdzv-endpoint", f"127.0.0.1:{port}") +
                   ["--out", str(one_node)], cwd=REPO, check=True, timeout=120, capture_output=True)
    two_nodes = tmp_path / "two.json"
    port = free_port()
    nodes = [subprocess.Popen(torchrun("--nnodes", "2", "--node-rank", str(r), "--nproc-per-node", "1",
                                       "--rdzv-endpoint", f"127.0.0.1:{port}") + ["--out", str(two_nodes)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in (0, 1)]
    try:
        for p in nodes:
            p.communicate(timeout=120)
            assert p.returncode == 0
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    a, b = json.loads(one_node.read_text()), json.loads(two_nodes.read_text())
    for r in (a, b):
        assert r["config"]["world_size"] == 2 and r["status"] == "complete" and len(r["ranks"]) == 2
        assert {row[6].split("/")[0] for row in r["timeline"]["rows"]} == {"r0", "r1"}
    assert [it["loss"] for it in a["iterations"]] == [it["loss"] for it in b["iterations"]]
    assert a["metrics"]["test_ap"] == b["metrics"]["test_ap"] and a["epochs"][-1]["val_ap"] == b["epochs"][-1]["val_ap"]
    check_views_of_a_multi_rank_result(one_node, tmp_path)


def check_views_of_a_multi_rank_result(path: Path, tmp_path: Path) -> None:
    """simulate --from, the Chrome trace, the Gantt lanes and the scaling figure read a W=2 result."""
    from mspipe_bench.harness.plots import make_plots
    from mspipe_bench.harness.trace import to_chrome_trace
    from mspipe_bench.trainers.rules import make_schedule, thread_sort_key
    from mspipe_bench.trainers.simulator import simulate, timeline_from_result

    result = json.loads(path.read_text())
    assert simulate(timeline_from_result(result), make_schedule("mspipe")).events_per_s > 0
    names = [e["args"]["name"] for e in to_chrome_trace(result)["traceEvents"] if e["name"] == "thread_name"]
    assert names == sorted(names, key=thread_sort_key) and names[0].startswith("r0/") and names[-1].startswith("r1/")
    stages = {e["name"].split("#")[0] for e in to_chrome_trace(result)["traceEvents"] if e["ph"] == "X"}
    assert {"AR", "AG", "T", "U"} <= stages
    # a W=1 twin (same workload, twice the time) makes the scaling figure
    single = json.loads(path.read_text())
    single["config"]["world_size"] = 1
    single["metrics"]["train_events_per_s"] /= 1.5
    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "single.json").write_text(json.dumps(single))
    report = make_plots([path, tmp_path / "w1" / "single.json"], tmp_path / "figs", formats=("png",),
                        only=["scaling"])
    assert (tmp_path / "figs" / "scaling.png").is_file(), report


def test_simulate_predicts_data_parallel_stage_times():
    from mspipe_bench.trainers.simulator import data_parallel, parse_comm, stage_times

    st = stage_times({"S": 2.0, "F": 1.0, "M": 2.0, "T": 20.0, "U": 3.0}, iterations=4)
    per = data_parallel(st, 2, parse_comm("AR=1ms,AG=0.5ms")).per_iteration[0]
    assert per == pytest.approx({"S": 1.0, "F": 0.5, "M": 1.0, "T": 10.001, "U": 3.0005})


def test_sweep_runs_a_data_parallel_point(tmp_path):
    """A sweep spec's nprocs dimension runs that point on W ranks (rank 0 writes the result)."""
    from mspipe_bench.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(f'models: [jodie]\ndatasets: ["{DATASET}"]\ntrainers: [sequential]\nseeds: [0]\nepochs: 1\n'
                    'max_iterations: 3\nnprocs: [2]\nwarmup: false\n')
    assert main(["sweep", str(spec), "--results-dir", str(tmp_path / "out")]) == 0
    (path,) = [p for p in (tmp_path / "out").glob("*.json") if p.name != "manifest.json"]
    result = json.loads(path.read_text())
    assert result["config"]["world_size"] == 2 and "-w2" in result["config"]["label"]

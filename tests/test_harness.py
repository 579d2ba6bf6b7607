"""Harness: results store, trace export, compare, sweeps (resumable), plots, bench / paper commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mspipe_bench.cli import main
from mspipe_bench.harness import sweep
from mspipe_bench.harness.compare import compare_dirs, load_tolerances
from mspipe_bench.harness.results import load_result, load_results, speedups
from mspipe_bench.harness.run import RunSpec, default_result_path, write_json_atomic
from mspipe_bench.harness.trace import to_chrome_trace

TINY = "synthetic:nodes=200,events=3000"
TRAINERS = ("sequential", "presample", "fixed-staleness", "mspipe")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Result files of tiny real runs of the four trainers (2 epochs of 3 iterations each)."""
    from mspipe_bench.harness.run import run

    d = tmp_path_factory.mktemp("results")
    for trainer in TRAINERS:
        spec = RunSpec(trainer=trainer, dataset=TINY, epochs=2, max_iterations=3, torch_threads=1)
        write_json_atomic(default_result_path(spec, d), run(spec))
    return d


@pytest.fixture
def results_copy(tiny_dir, tmp_path) -> Path:
    d = tmp_path / "current"
    shutil.copytree(tiny_dir, d)
    return d


def _file(d: Path, trainer: str) -> Path:
    (p,) = [p for p in d.glob("*.json") if re.search(rf"_{trainer}(-k\d+)?_s\d", p.name)]
    return p


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------- results
@pytest.mark.e2e
def test_load_results_one_row_per_run(tiny_dir):
    df = load_results(tiny_dir)
    assert len(df) == 4
    for col in ("config.model", "config.dataset", "config.trainer", "config.staleness", "config.mitigation",
                "config.seed", "config.epochs", "config.batch_size", "config.key", "config.label",
                "metrics.train_events_per_s", "metrics.test_ap", "status", "env.cpu", "path"):
        assert col in df.columns, col
    assert set(df["variant"]) == {"sequential", "presample", "fixed-staleness-k2", "mspipe"}
    assert (df["status"] == "complete").all()
    sp = speedups(df).set_index("config.trainer")["speedup_vs_sequential"]
    assert sp["sequential"] == pytest.approx(1.0)
    assert sp.notna().all()


@pytest.mark.e2e
def test_speedups_never_across_directories(tiny_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(_file(tiny_dir, "mspipe"), other)
    df = speedups(load_results([tiny_dir, other]))
    lone = df[df["dir"] == str(other.resolve())]
    assert len(lone) == 1 and lone["speedup_vs_sequential"].isna().all()


@pytest.mark.e2e
def test_non_result_json_skipped_with_warning(results_copy):
    (results_copy / "notes.json").write_text('{"hello": 1}')
    with pytest.warns(UserWarning, match="notes.json"):
        df = load_results(results_copy)
    assert len(df) == 4


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["truncate", "drop_metrics", "bad_status"])
def test_malformed_result_is_an_error_naming_the_file(results_copy, damage):
    p = _file(results_copy, "presample")
    if damage == "truncate":
        p.write_text(p.read_text()[:200])
    elif damage == "drop_metrics":
        _edit(p, lambda d: d.pop("metrics"))
    else:
        _edit(p, lambda d: d.update(status="weird"))
    with pytest.raises(ValueError, match=p.name):
        load_results(results_copy)
    with pytest.raises(ValueError, match=p.name):
        load_result(p)


# --------------------------------------------------------------------------------------------- trace
@pytest.mark.e2e
def test_trace_export_structure(tiny_dir, tmp_path, capsys):
    src = _file(tiny_dir, "mspipe")
    out = tmp_path / "trace.json"
    assert main(["trace", str(src), "-o", str(out)]) == 0
    trace = json.loads(out.read_text())  # valid JSON
    result = load_result(src)
    rows = result["timeline"]["rows"]
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert len(complete) == len(rows)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(names.values()) == {r[6] for r in rows}
    assert len(set(names)) == len(names)  # one tid per thread
    for e, r in zip(complete, rows):
        assert names[e["tid"]] == r[6]
        assert e["ts"] == pytest.approx(r[4] * 1e6) and e["dur"] == pytest.approx((r[5] - r[4]) * 1e6)
    train = [e for e in complete if e["cat"] == "train"]
    assert train and all(e["name"] == f"{e['args']['stage']}#{e['args']['iteration']}" for e in train)
    assert all("k" in e["args"] and "observed_staleness" in e["args"] for e in train)
    assert "T#0" in {e["name"] for e in train}


@pytest.mark.e2e
def test_trace_of_several_runs_one_process_each(tiny_dir):
    results = [load_result(_file(tiny_dir, t)) for t in ("sequential", "mspipe")]
    trace = to_chrome_trace(results)
    pids = {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert pids == {1, 2}


# ------------------------------------------------------------------------------------------- compare
@pytest.mark.e2e
def test_compare_identical_dirs_exit_0(tiny_dir, results_copy, capsys):
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "test AP" in out and "speedup over sequential" in out and "OK" in out


@pytest.mark.e2e
def test_compare_planted_ap_regression_exit_1(tiny_dir, results_copy, capsys):
    _edit(_file(results_copy, "mspipe"), lambda d: d["metrics"].update(test_ap=d["metrics"]["test_ap"] - 0.05))
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


@pytest.mark.e2e
def test_compare_planted_speedup_regression_exit_1(tiny_dir, results_copy, capsys):
    def slow(d):
        d["metrics"]["train_events_per_s"] *= 0.7

    _edit(_file(results_copy, "presample"), slow)
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir)]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "presample" in ln and "REGRESSION" in ln)
    assert "-30.0%" in line


@pytest.mark.e2e
def test_compare_tolerances_and_missing_runs(tiny_dir, results_copy, tmp_path):
    _edit(_file(results_copy, "mspipe"), lambda d: d["metrics"].update(test_ap=d["metrics"]["test_ap"] - 0.05))
    loose = tmp_path / "tol.yaml"
    loose.write_text("ap_drop: 0.1\n")
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir), "--tolerances", str(loose)]) == 0
    _file(results_copy, "fixed-staleness").unlink()
    comp = compare_dirs(results_copy, tiny_dir, load_tolerances(loose))
    assert len(comp.missing) == 1 and not comp.failed
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir), "--tolerances", str(loose),
                 "--strict"]) == 1
    loose.write_text("ap_drops: 0.1\n")
    assert main(["compare", str(results_copy), "--baseline", str(tiny_dir), "--tolerances", str(loose)]) == 2


@pytest.mark.e2e
def test_compare_staleness_bound_violation(tiny_dir, results_copy):
    _edit(_file(results_copy, "fixed-staleness"), lambda d: d["metrics"].update(max_observed_staleness=5))
    comp = compare_dirs(results_copy, tiny_dir)
    assert comp.failed and any("bound" in c.note for c in comp.regressions)


# --------------------------------------------------------------------------------------------- sweep
def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.e2e
def test_sweep_is_resumable(tmp_path):
    spec = _write_spec(tmp_path / "s.yaml", f"""
models: [tgn]
datasets: ["{TINY}"]
trainers: [sequential, presample]
seeds: [0]
epochs: 1
max_iterations: 3
torch_threads: 1
warmup: false
""")
    runs, opts = sweep.load_runs(spec)
    assert len(runs) == 2 and opts["warmup"] is False
    out = tmp_path / "res"
    assert main(["sweep", str(spec), "--results-dir", str(out)]) == 0  # real runs
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and all(load_result(f)["status"] == "complete" for f in files)

    calls = []

    def counting(s, d):
        calls.append(s.key())
        return sweep.run_one(s, d)

    lines = []
    rep = sweep.run_sweep(runs, out, warmup=False, runner=counting, log=lines.append)
    assert calls == [] and len(rep.skipped) == 2
    assert sum("skip" in ln for ln in lines) == 2

    victim = default_result_path(runs[1], out)
    victim.unlink()
    rep = sweep.run_sweep(runs, out, warmup=False, runner=counting, log=lines.append)
    assert calls == [runs[1].key()] and len(rep.ran) == 1 and len(rep.skipped) == 1
    assert victim.is_file()
    assert any("ETA" in ln for ln in lines)

    # an interrupted result is redone
    _edit(victim, lambda d: d.update(status="interrupted"))
    calls.clear()
    sweep.run_sweep(runs, out, warmup=False, runner=lambda s, d: (calls.append(1), (victim, {}))[1], log=lines.append)
    assert calls == [1]


def test_sweep_failed_run_does_not_stop_the_sweep(tmp_path):
    runs = sweep.expand({"trainers": ["sequential", "presample", "mspipe"], "dataset": TINY, "epochs": 1})

    def runner(s, d):
        if s.trainer == "presample":
            raise RuntimeError("boom")
        return Path(d) / "x.json", {"metrics": {"train_events_per_s": 1.0}}

    rep = sweep.run_sweep(runs, tmp_path, warmup=False, runner=runner, log=lambda _: None)
    assert [s.trainer for s, _, _ in rep.ran] == ["sequential", "mspipe"]
    assert len(rep.failed) == 1 and rep.exit_code == 1


def test_sweep_expansion_is_interleaved():
    runs = sweep.expand({
        "models": ["tgn", "jodie"],
        "datasets": ["synthetic"],
        "trainers": ["sequential", "fixed-staleness", "mspipe", {"presample": {"prefetch": [1, 3]}}],
        "staleness": [2, 3],
        "mitigation": [True, False],
        "seeds": [0, 1],
        "epochs": 2,
    })
    labels = [r.label() for r in runs]
    per_block = 1 + 2 + 2 + 2
    assert len(runs) == 2 * 2 * per_block
    assert labels[:per_block] == [
        "tgn_synthetic_sequential_s0",
        "tgn_synthetic_fixed-staleness-k2_s0", "tgn_synthetic_fixed-staleness-k3_s0",
        "tgn_synthetic_mspipe_s0", "tgn_synthetic_mspipe-nomit_s0",
        "tgn_synthetic_presample-d1_s0", "tgn_synthetic_presample-d3_s0",
    ]
    assert labels[per_block].startswith("jodie_") and labels[2 * per_block].endswith("_s1")
    assert [r.prefetch for r in runs[5:7]] == [1, 3]
    assert all(r.epochs == 2 for r in runs)
    assert len({r.key() for r in runs}) == len(runs)
    # sequential/presample keep mitigation off; a scalar applies to all runs
    assert all(r.resolved().mitigation is False for r in runs if r.trainer == "sequential")
    assert all(r.mitigation is False for r in sweep.expand({"trainers": ["sequential", "mspipe"],
                                                           "mitigation": False}))


@pytest.mark.parametrize("text, key", [
    ("models: [tgn]\nfoo: 1\n", "foo"),
    ("trainers: [sequential, seq]\n", "seq"),
    ("trainers: [{trainer: mspipe, bogus: 2}]\n", "bogus"),
    ("epochs: two\n", "epochs"),
    ("seeds: []\n", "seeds"),
    ("model: tgn\nmodels: [jodie]\n", "models"),
    ("staleness: [0]\n", "staleness"),
    ("overrides: gnn.heads=2\n", "overrides"),
    ("- just a list\n", "mapping"),
])
def test_sweep_spec_validation_errors(tmp_path, capsys, text, key):
    spec = _write_spec(tmp_path / "bad.yaml", text)
    with pytest.raises(sweep.SpecError, match=key):
        sweep.load_runs(spec)
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and key in err


def test_sweep_dry_run_and_example_specs(tmp_path, capsys):
    specs = sorted((Path(sweep.__file__).parent / "specs").glob("*.yaml"))
    assert {p.stem for p in specs} >= {"bench", "staleness_sweep", "baseline"}
    for p in specs:
        runs, _ = sweep.load_runs(p)
        assert runs, p
    baseline, _ = sweep.load_runs(Path(sweep.__file__).parent / "specs" / "baseline.yaml")
    assert {r.trainer for r in baseline} == set(TRAINERS) and {r.seed for r in baseline} == {0, 1}
    assert main(["sweep", str(specs[0]), "--dry-run", "--results-dir", str(tmp_path)]) == 0
    assert "would run" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))


# --------------------------------------------------------------------------------------------- plots
EXPECTED_FIGURES = ("throughput", "accuracy", "staleness_sweep", "convergence", "stage_breakdown", "gantt_mspipe",
                    "gantt_presample", "gantt_fixed-staleness-k2", "staleness", "measured_vs_simulated")


@pytest.mark.e2e
def test_plot_command_writes_every_figure(tiny_dir, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", str(tiny_dir), "-o", str(out)]) == 0
    for name in EXPECTED_FIGURES:
        for ext in ("png", "pdf"):
            f = out / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (out / "index.md").is_file()
    assert ": skipped" not in capsys.readouterr().out


@pytest.mark.e2e
def test_plot_skips_figures_without_data(tiny_dir, tmp_path, capsys):
    only_seq = tmp_path / "seq"
    only_seq.mkdir()
    shutil.copy(_file(tiny_dir, "sequential"), only_seq)
    out = tmp_path / "plots"
    assert main(["plot", str(only_seq), "-o", str(out), "--formats", "png",
                 "--only", "stage_breakdown,gantt,staleness,staleness_sweep"]) == 0
    text = capsys.readouterr().out
    assert (out / "stage_breakdown.png").is_file()
    for name in ("gantt", "staleness", "staleness_sweep"):
        assert f"{name}: skipped" in text
    assert not (out / "staleness.png").exists()


# ------------------------------------------------------------------------------------- bench / paper
def test_bench_help():
    proc = subprocess.run([sys.executable, "-m", "mspipe_bench", "bench", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    for opt in ("--epochs", "--dataset", "--model", "--results-dir", "--plots-dir", "--seeds", "--fresh"):
        assert opt in proc.stdout


def test_bench_and_paper_plans(tmp_path, capsys):
    assert main(["bench", "--dry-run", "--seeds", "0,1", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("would run") == 8
    order = [ln.split()[3] for ln in out.splitlines() if "would run" in ln]
    assert order[:4] == ["tgn_synthetic_sequential_s0", "tgn_synthetic_presample_s0",
                         "tgn_synthetic_fixed-staleness-k2_s0", "tgn_synthetic_mspipe_s0"]
    assert main(["paper", "--dry-run", "--datasets", "synthetic", "--seeds", "0",
                 "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("would run") == 3 * 8  # 3 models x (seq, presample, K=1..4, mspipe +/- mitigation)
    assert "apan_synthetic_mspipe-nomit_s0" in out and "jodie_synthetic_fixed-staleness-k4_s0" in out


def test_cli_help_lists_the_harness_commands_without_heavy_imports():
    code = ("import sys; from mspipe_bench.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'torch', 'dgl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    from mspipe_bench.harness import cmd_plot, plots

    assert cmd_plot.FIGURES == plots.FIGURES


def test_resume_skips_only_results_measured_on_this_machine(tmp_path):
    import platform

    from mspipe_bench.harness.run import RunSpec, default_result_path, write_json_atomic

    spec = RunSpec(model="tgn", dataset="synthetic:nodes=200,events=3000", epochs=1, max_iterations=3)
    path = default_result_path(spec, tmp_path)
    for host, found in ((platform.node(), True), ("another-machine", False)):
        write_json_atomic(path, {"status": "complete", "config": {"key": spec.key()}, "env": {"hostname": host}})
        assert (sweep.existing_result(spec, tmp_path) == path) is found


_ALLOC_SCRIPT = """
import ctypes, sys, torch
from mspipe_bench.harness.run import environment, tune_allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tune":
    tune_allocator()
before = libc.mallinfo2().hblkhd  # bytes in chunks that are mmaps of their own
x = torch.ones(4 << 20)  # 16 MB, the order of TGN's largest per-iteration tensors
print((libc.mallinfo2().hblkhd - before) >> 20, environment()["allocator"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or __import__("platform").libc_ver()[0] != "glibc",
                    reason="glibc malloc tuning")
def test_tuned_allocator_serves_tensors_from_the_heap():
    """By default glibc serves a fresh 16 MB tensor as an mmap of its own (unmapped when freed, page-faulted
    in again when re-allocated; glibc raises the threshold only after such a free, and trims the heap top
    above twice it); after tune_allocator it comes from the heap. Each case in its own process."""
    import os

    def run(mode: str, env=None) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", _ALLOC_SCRIPT, mode], capture_output=True, text=True,
                             check=True, env=env).stdout.split(maxsplit=1)
        return int(out[0]), out[1].strip()

    mapped, label = run("default")
    assert label == "default" and mapped >= 16
    mapped, label = run("tune")
    assert label.startswith("glibc mmap_threshold=") and mapped == 0
    _, label = run("tune", env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"})
    assert label == "glibc settings from the environment"

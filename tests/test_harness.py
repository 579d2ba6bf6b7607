"""Harness: results store (.json and .json.gz), trace export, compare, the run specification and its options,
sweeps (run directories, resuming, spec validation), plots, bench / paper commands, user errors."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mspipe_bench.cli import main
from mspipe_bench.errors import UserError
from mspipe_bench.harness import sweep
from mspipe_bench.harness.compare import compare_dirs, load_tolerances
from mspipe_bench.harness.results import load_result, load_results, machine_tag, result_files, speedups
from mspipe_bench.harness.run import RunSpec, default_result_path, spec_from_options, write_json_atomic
from mspipe_bench.harness.trace import to_chrome_trace
from mspipe_bench.trainers.rules import TRAINERS

TINY = "synthetic:nodes=200,events=3000"


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
    (p,) = [p for p in result_files(d) if re.search(rf"_{trainer}(-k\d+)?_s\d", p.name)]
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


@pytest.mark.e2e
def test_gzipped_results_read_like_plain_ones(results_copy, tmp_path):
    plain = _file(results_copy, "mspipe")
    data = load_result(plain)
    gz = write_json_atomic(tmp_path / "copy.json.gz", data)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"  # written compressed
    assert load_result(gz) == data
    with gzip.open(gz, "rb") as fh:  # reproducible: no name or time in the header
        assert fh.read() and write_json_atomic(tmp_path / "again.json.gz", data).read_bytes() == gz.read_bytes()
    shutil.copy(gz, results_copy / (plain.name + ".gz"))
    plain.unlink()
    df = load_results(results_copy)
    assert len(df) == 4 and df["path"].str.endswith(".json.gz").sum() == 1
    assert df["env.machine"].iloc[0] == machine_tag(data["env"])
    (results_copy / "broken.json.gz").write_bytes(gz.read_bytes()[:100])
    with pytest.raises(UserError, match="broken.json.gz"):
        load_results(results_copy)


def test_machine_tag():
    assert machine_tag({"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2}) == "intel-xeon-2cpu"
    assert machine_tag({"cpu": "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz", "cpu_count": 8}) == "intel-core-i7-8550u-8cpu"
    assert machine_tag({"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_count": 4}) == "amd-epyc-7763-4cpu"
    assert machine_tag({}) == "unknown-cpu"


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
def test_each_sweep_writes_a_new_run_directory_and_resume_skips_only_its_own_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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
    assert main(["sweep", str(spec)]) == 0  # real runs
    assert main(["sweep", str(spec)]) == 0  # measures again, into another directory
    first, second = sorted((tmp_path / "runs").iterdir())
    assert first.name.startswith("sweep-s-") and second.name.startswith("sweep-s-")
    for d in (first, second):
        files = result_files(d)
        assert len(files) == 2 and all(load_result(f)["status"] == "complete" for f in files)
        assert (d / sweep.MANIFEST).is_file()
    # resuming runs nothing the invocation completed there ...
    calls, lines = [], []

    def counting(s, d):
        calls.append(s.key())
        return sweep.run_one(s, d)

    rep = sweep.run_sweep(runs, sweep.RunDir.resume(first, runs), warmup=False, runner=counting, log=lines.append)
    assert calls == [] and len(rep.skipped) == 2 and sum("skip" in ln for ln in lines) == 2
    # ... and redoes a run whose file is gone or interrupted
    victim = default_result_path(runs[1], first)
    victim.unlink()
    rep = sweep.run_sweep(runs, sweep.RunDir.resume(first, runs), warmup=False, runner=counting, log=lines.append)
    assert calls == [runs[1].key()] and len(rep.ran) == 1 and len(rep.skipped) == 1 and victim.is_file()
    assert any("ETA" in ln for ln in lines)
    _edit(victim, lambda d: d.update(status="interrupted"))
    calls.clear()
    sweep.run_sweep(runs, sweep.RunDir.resume(first, runs), warmup=False,
                    runner=lambda s, d: (calls.append(1), (victim, {}))[1], log=lines.append)
    assert calls == [1]


def test_result_files_a_run_directory_did_not_write_are_never_reused(tiny_dir, tmp_path, capsys):
    """A complete result with the right key (e.g. a committed reference) is not a measurement of this
    invocation: in a directory without a manifest, or not listed in its manifest, it is run again."""
    runs = sweep.expand({"trainers": ["sequential"], "dataset": TINY, "epochs": 2, "max_iterations": 3})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(_file(tiny_dir, "sequential"), foreign)
    assert load_result(result_files(foreign)[0])["config"]["key"] == runs[0].key()
    for argv in (["--resume", str(foreign)], ["--results-dir", str(foreign)]):
        assert main(["bench", "--dataset", TINY, "--epochs", "2", "--max-iterations", "3", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(foreign) in err
    rd = sweep.RunDir.create(runs, "test", tmp_path / "own")
    shutil.copy(_file(tiny_dir, "sequential"), rd.path)  # same key, but this invocation did not write it
    assert rd.completed(runs[0]) is None
    rd.record(runs[0], rd.path / _file(tiny_dir, "sequential").name)
    assert sweep.RunDir.resume(rd.path, runs).completed(runs[0]) is not None
    other = sweep.expand({"trainers": ["presample"], "dataset": TINY, "epochs": 2})
    with pytest.raises(UserError, match="different plan"):
        sweep.RunDir.resume(rd.path, other)


def test_sweep_failed_run_does_not_stop_the_sweep(tmp_path):
    runs = sweep.expand({"trainers": ["sequential", "presample", "mspipe"], "dataset": TINY, "epochs": 1})

    def runner(s, d):
        if s.trainer == "presample":
            raise RuntimeError("boom")
        return Path(d) / "x.json", {"metrics": {"train_events_per_s": 1.0}}

    rd = sweep.RunDir.create(runs, "test", tmp_path / "rd")
    rep = sweep.run_sweep(runs, rd, warmup=False, runner=runner, log=lambda _: None)
    assert [s.trainer for s, _, _ in rep.ran] == ["sequential", "mspipe"]
    assert len(rep.failed) == 1 and rep.exit_code == 1
    assert set(rd.manifest["completed"]) == {runs[0].key(), runs[2].key()}


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
    assert [r.trainer for r in sweep.expand({})] == list(TRAINERS)  # no `trainers`: every trainer


@pytest.mark.parametrize("text, key", [
    ("models: [tgn]\nfoo: 1\n", "unknown key 'foo'"),
    ("trainers: [sequential, seq]\n", "key 'trainers[1].trainer': input should be 'sequential'"),
    ("trainers: [{trainer: mspipe, bogus: 2}]\n", "unknown key 'trainers[0].bogus'"),
    ("trainers: [{mspipe: 3}]\n", "key 'trainers[0]': the fields of trainer 'mspipe' must be a mapping"),
    ("epochs: two\n", "key 'epochs': input should be a valid integer, got 'two'"),
    ("epochs: [2, 0]\n", "key 'epochs[1]': input should be greater than or equal to 1, got 0"),
    ("seeds: []\n", "key 'seeds'"),
    ("seed: -1\n", "key 'seed': input should be greater than or equal to 0, got -1"),
    ("model: tgn\nmodels: [jodie]\n", "give either 'models' or 'model'"),
    ("staleness: [0]\n", "key 'staleness[0]': input should be greater than or equal to 1, got 0"),
    ("trainers: [{fixed-staleness: {staleness: [2, 0]}}]\n", "key 'trainers[0].staleness[1]'"),
    ("torch_threads: 0\n", "key 'torch_threads': input should be greater than or equal to 1, got 0"),
    ("mitigation_quantile: 0\n", "key 'mitigation_quantile': input should be greater than 0"),
    ("negatives: src\n", "key 'negatives': input should be 'all' or 'dst', got 'src'"),
    ("val_ratio: 0.5\ntest_ratio: 0.5\n", "val_ratio + test_ratio must be < 1"),
    ("overrides: gnn.heads=2\n", "key 'overrides': input should be a valid list"),
    ("warmup: yes please\n", "key 'warmup'"),
    ("- just a list\n", "a sweep spec must be a mapping"),
])
def test_sweep_spec_validation_errors_name_file_key_and_value(tmp_path, capsys, text, key):
    spec = _write_spec(tmp_path / "bad.yaml", text)
    with pytest.raises(sweep.SpecError, match=re.escape(key)):
        sweep.load_runs(spec)
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"bad.yaml: {key}" in err


def test_sweep_dry_run_and_example_specs(tmp_path, capsys):
    specs = sorted((Path(sweep.__file__).parent / "specs").glob("*.yaml"))
    assert {p.stem for p in specs} >= {"bench", "staleness_sweep", "baseline"}
    for p in specs:
        runs, _ = sweep.load_runs(p)
        assert runs, p
    baseline, _ = sweep.load_runs(Path(sweep.__file__).parent / "specs" / "baseline.yaml")
    assert {r.trainer for r in baseline} == set(TRAINERS) and {r.seed for r in baseline} == {0, 1}
    assert main(["sweep", str(specs[0]), "--dry-run", "--results-dir", str(tmp_path / "new")]) == 0
    assert "would run" in capsys.readouterr().out
    assert not (tmp_path / "new").exists()  # a dry run creates nothing


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
    # every figure is drawn but the data-parallel scaling figure (the tiny sweep has single-process runs only)
    skipped = [line for line in capsys.readouterr().out.splitlines() if ": skipped" in line]
    assert len(skipped) == 1 and skipped[0].strip().startswith("scaling: skipped"), skipped


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
    for opt in ("--epochs", "--dataset", "--model", "--results-dir", "--resume", "--plots-dir", "--seeds", "--threads"):
        assert opt in proc.stdout
    assert "--fresh" not in proc.stdout  # every invocation measures: nothing to force


def _plan(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines() if ln.rstrip().endswith("would run")]


def test_bench_and_paper_plans(tmp_path, capsys):
    assert main(["bench", "--dry-run", "--seeds", "0,1"]) == 0
    order = _plan(capsys.readouterr().out)
    assert len(order) == 8
    assert order[:4] == ["tgn_synthetic_sequential_s0", "tgn_synthetic_presample_s0",
                         "tgn_synthetic_fixed-staleness-k2_s0", "tgn_synthetic_mspipe_s0"]
    assert main(["paper", "--dry-run", "--datasets", "synthetic", "--seeds", "0"]) == 0
    plan = _plan(capsys.readouterr().out)
    assert len(plan) == 3 * 8  # 3 models x (seq, presample, K=1..4, mspipe +/- mitigation)
    assert "apan_synthetic_mspipe-nomit_s0" in plan and "jodie_synthetic_fixed-staleness-k4_s0" in plan


@pytest.mark.e2e
def test_bench_measures_into_a_new_directory_each_time_and_resumes(tiny_dir, tmp_path, monkeypatch, capsys):
    """Two invocations: two run directories, each with every trainer's result; --resume runs nothing more.
    (The runs are the tiny fixture's, copied by a stand-in for run_one: the plumbing is under test here.)"""
    monkeypatch.chdir(tmp_path)
    ran = []

    def fake_run_one(spec, results_dir, progress=False):
        ran.append(spec.key())
        (src,) = [p for p in result_files(tiny_dir) if load_result(p)["config"]["key"] == spec.key()]
        return Path(shutil.copy(src, results_dir)), load_result(src)

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    argv = ["bench", "--dataset", TINY, "--epochs", "2", "--max-iterations", "3", "--no-warmup", "--no-plots"]
    assert main(argv) == 0
    out1 = capsys.readouterr().out
    assert main(argv) == 0
    dirs = sorted((tmp_path / "runs").iterdir())
    assert len(dirs) == 2 and len(ran) == 2 * len(TRAINERS)
    assert all(d.name.startswith("bench-") and len(result_files(d)) == len(TRAINERS) for d in dirs)
    assert f"run directory: runs/{dirs[0].name}/" in out1
    assert f"measured on {machine_tag(load_result(result_files(dirs[0])[0])['env'])} " in out1
    assert (dirs[0] / "summary.txt").read_text().count("synthetic") == len(TRAINERS)
    ran.clear()
    assert main([*argv, "--resume", str(dirs[0])]) == 0
    assert ran == [] and f"{len(TRAINERS)} completed there earlier" in capsys.readouterr().out
    assert main(["bench", "--dataset", TINY, "--epochs", "3", "--resume", str(dirs[0])]) == 2  # another plan


# ------------------------------------------------------------------------------ run spec and user errors
def test_run_key_unchanged_for_the_same_spec():
    """The key of a spec is a hash of its resolved fields; the committed baseline's file name carries it."""
    assert RunSpec(model="tgn", dataset="synthetic", trainer="sequential", epochs=2, seed=0).key() == "96bd9aef85da"
    assert RunSpec(trainer="presample", staleness=3).key() == RunSpec(trainer="presample").key()  # unused: normalised
    assert RunSpec(trainer="fixed-staleness", staleness=3).key() != RunSpec(trainer="fixed-staleness").key()


def test_run_options_come_from_the_run_spec():
    from mspipe_bench.cli import build_parser
    from mspipe_bench.harness.cmd_run import spec_from_args

    args = build_parser().parse_args(["run"])
    assert spec_from_args(args) == RunSpec()
    args = build_parser().parse_args(["run", "--threads", "2", "--set", "gnn.heads=4", "--no-mitigation",
                                      "--trainer", "mspipe", "--val-ratio", "0.2"])
    assert spec_from_args(args) == RunSpec(torch_threads=2, overrides=["gnn.heads=4"], mitigation=False,
                                           trainer="mspipe", val_ratio=0.2)
    bench = build_parser().parse_args(["bench"])
    assert bench.epochs == 5 and bench.torch_threads == 1 and not hasattr(bench, "trainer")


@pytest.mark.parametrize("values, message", [
    ({"torch_threads": 0}, "--threads: input should be greater than or equal to 1, got 0"),
    ({"epochs": 0}, "--epochs: input should be greater than or equal to 1, got 0"),
    ({"trainer": "fast"}, "--trainer: input should be 'sequential'"),
    ({"mitigation_lambda": 1.5}, "--mitigation-lambda: input should be less than or equal to 1, got 1.5"),
])
def test_bad_option_values_name_the_option(values, message):
    with pytest.raises(UserError, match=re.escape(message)):
        spec_from_options(values)


@pytest.mark.parametrize("argv, message", [
    (["run", "--threads", "0"], "--threads: input should be greater than or equal to 1, got 0"),
    (["run", "--out", "/"], "--out: '/' is a directory"),
    (["run", "--out", "{tmp}"], "is a directory"),
    (["run", "--out", "{file}/r.json"], "is a file, not a directory"),
    (["run", "--results-dir", "{file}"], "--results-dir"),
    (["run", "--model", "nosuchmodel"], "nosuchmodel"),
    (["bench", "--threads", "0"], "--threads: input should be greater than or equal to 1, got 0"),
    (["bench", "--seeds", "0,x"], "--seeds"),
    (["bench", "--seeds", "-1"], "--seeds: input should be greater than or equal to 0, got -1"),
    (["bench", "--plots-dir", "{file}/figs"], "--plots-dir"),
    (["bench", "--results-dir", "{file}"], "--results-dir"),
    (["bench", "--dataset", "{tmp}/nothing-here"], "nothing-here"),
    (["paper", "--jobs", "0", "--datasets", "synthetic"], "--jobs"),
    (["sweep", "{tmp}/missing.yaml"], "missing.yaml"),
    (["trace", "{file}"], "not a result file"),
    (["run", "--epochs", "two"], "--epochs"),
])
def test_user_errors_exit_2_in_one_line_before_anything_runs(argv, message, tmp_path, monkeypatch, capsys):
    from mspipe_bench.harness import run as run_module

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text('{"hello": 1}')
    argv = [a.format(tmp=tmp_path, file=tmp_path / "a-file") for a in argv]

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_module, "run", no_training)
    monkeypatch.setattr(run_module, "run_context", no_training)
    monkeypatch.setattr(sweep, "run_one", no_training)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (a value of the wrong type)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_help_lists_the_harness_commands_without_heavy_imports():
    code = ("import sys; from mspipe_bench.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'torch', 'dgl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


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

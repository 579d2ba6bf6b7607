"""The figure registry (one definition drives make_plots, ``--only`` and the ``plot`` help), the plot
command's input errors, and the analysis numbers behind the figures. Drawing every figure from real runs is
the end-to-end test in test_harness.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mspipe_bench.cli import main
from mspipe_bench.harness import analysis, plots

TINY = "synthetic:nodes=200,events=3000"


def test_registry_is_cheap_to_import():
    code = ("import sys; from mspipe_bench.harness.plots import FIGURES; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'torch', 'dgl') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_help_lists_every_figure_with_its_description(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, kind in plots.FIGURES.items():
        assert name in out and " ".join(kind.description.split()) in out


def test_a_registered_figure_is_drawn_and_listed(tmp_path, monkeypatch, capsys):
    pd = pytest.importorskip("pandas")

    def draw(plt, data):
        fig = plt.figure()
        fig.gca().plot(range(len(data.df)))
        return fig

    monkeypatch.setitem(plots.FIGURES, "runs_count", plots.FigureKind("runs_count", "how many runs", draw))
    df = pd.DataFrame({"status": ["complete", "interrupted"], "speedup_vs_sequential": [1.0, None], "dir": ["d", "d"]})
    report = plots.make_plots(df, tmp_path, formats=["png"], only=["runs_count"])
    assert list(report.written) == ["runs_count"] and (tmp_path / "runs_count.png").stat().st_size > 0
    assert "`runs_count`" in (tmp_path / "index.md").read_text()
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "how many runs" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["--only", "throughput,thruput"], "unknown figure(s) thruput"),
    (["--formats", "png,jpgg"], "jpgg not supported"),
])
def test_bad_options_exit_2_before_reading_results(tmp_path, capsys, argv, needle):
    assert main(["plot", str(tmp_path / "no_such_dir"), "-o", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- analysis
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A sequential and an mspipe run (1 epoch of 3 iterations) in one directory."""
    from mspipe_bench.harness.run import RunSpec, default_result_path, run, write_json_atomic

    d = tmp_path_factory.mktemp("runs")
    for trainer in ("sequential", "mspipe"):
        spec = RunSpec(trainer=trainer, dataset=TINY, epochs=1, max_iterations=3, torch_threads=1)
        write_json_atomic(default_result_path(spec, d), run(spec))
    return d


@pytest.mark.e2e
def test_measured_vs_simulated_and_summary(two_runs):
    from mspipe_bench.harness.results import load_results, speedups

    df = speedups(load_results(two_runs))
    table = analysis.measured_vs_simulated_table(df, analysis.ResultCache()).set_index("variant")
    assert set(table.index) == {"sequential", "mspipe"}
    assert (table["efficiency"] == table["measured"] / table["simulated"]).all()
    assert (table["simulated"] > 0).all()
    text = analysis.summary_text(two_runs)
    lines = text.splitlines()
    header = next(n for n, line in enumerate(lines) if line.split()[:3] == ["model", "dataset", "trainer"]
                  and "efficiency" in line)
    rows = {line.split()[2]: line.split() for line in lines[header + 2:]}
    for v in ("sequential", "mspipe"):
        assert rows[v][-1] == f"{table.loc[v, 'efficiency']:.2f}"
        assert rows[v][-2] == f"{table.loc[v, 'simulated']:,.0f}"


@pytest.mark.e2e
def test_stage_times_and_picks(two_runs):
    from mspipe_bench.harness.results import load_results

    df = load_results(two_runs)
    groups, shares, per_iter = analysis.stage_times(df[df["config.trainer"] == "sequential"], analysis.ResultCache())
    assert len(groups) == 1 and groups[0][0] == "tgn"
    assert shares.shape == per_iter.shape == (1, 5) and shares.sum() == pytest.approx(1.0)
    assert (per_iter > 0).all()
    picks = analysis.pick_runs(df, ["mspipe", "presample", "sequential"])
    assert list(picks) == ["mspipe", "sequential"]

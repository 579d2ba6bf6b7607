"""Schedule simulator (mspipe_bench.trainers.simulator) against hand-computed schedules and the rules' invariants."""

from __future__ import annotations

import json
import random

import pytest

from mspipe_bench.cli import main
from mspipe_bench.errors import UserError
from mspipe_bench.trainers import rules
from mspipe_bench.trainers.rules import TRAINERS, make_schedule
from mspipe_bench.trainers.simulator import (
    Contention,
    load_profile,
    parse_contention,
    parse_factors,
    parse_tau,
    simulate,
    simulate_trainers,
    stage_times,
    summarize,
    timeline_from_result,
)

CASE1 = {"S": 1, "F": 1, "M": 2, "T": 10, "U": 2}  # M+U < T: k_min = 2
CASE2 = {"S": 1, "F": 1, "M": 6, "T": 10, "U": 6}  # M+U > T: k_min = 3
N = 60


def starts(res, stage):
    rows = sorted((r for r in res.timeline if r[1] == stage), key=lambda r: r[0])
    return [r[2] for r in rows]


def random_tau(rng, n, base=None, spread=0.5):
    base = base or {s: rng.uniform(0.2, 6.0) for s in rules.STAGES}
    return {s: [m * rng.uniform(1 - spread, 1 + spread) for _ in range(n)] for s, m in base.items()}


# -------------------------------------------------------------------------------------- minimal bound


def test_k_min_steady_state_formula():
    assert rules.k_min_steady_state(2, 2, 10) == 2
    assert rules.k_min_steady_state(6, 6, 10) == 3
    assert rules.k_min_steady_state(5, 5, 10) == 2  # M+U == T still fits


@pytest.mark.parametrize("tau,k_min", [(CASE1, 2), (CASE2, 3)])
def test_mspipe_steady_state_k_is_minimal_bound(tau, k_min):
    res = simulate(tau, make_schedule("mspipe"), N)
    assert rules.k_min_steady_state(tau["M"], tau["U"], tau["T"]) == k_min
    assert res.k[0] == 1
    assert set(res.k[k_min:]) == {k_min}
    assert res.period_s == pytest.approx(tau["T"])
    assert sum(res.bubble_s) == 0


# -------------------------------------------------------------------------------------- periods


def test_sequential_period_is_sum_of_stages():
    res = simulate(CASE1, make_schedule("sequential"), N, 600)
    assert res.period_s == pytest.approx(16)
    assert res.makespan_s == pytest.approx(16 * N)
    assert res.events_per_s == pytest.approx(600 / 16)
    assert {r[4] for r in res.timeline} == {"main"}
    assert res.observed_staleness == [0] * N


def test_presample_period_is_m_t_u():
    res = simulate(CASE1, make_schedule("presample"), N)
    assert res.period_s == pytest.approx(2 + 10 + 2)
    assert res.observed_staleness == [0] * N
    assert res.k == [1] * N
    # the chain M -> T -> U runs in one thread; S and F run ahead in another
    lanes = {(r[1], r[4]) for r in res.timeline}
    assert lanes == {("S", "sampler"), ("F", "sampler"), ("M", "trainer"), ("T", "trainer"), ("U", "trainer")}
    k1 = simulate(CASE1, make_schedule("fixed-staleness", staleness=1), N)
    assert k1.period_s == res.period_s and {(r[1], r[4]) for r in k1.timeline} == lanes


def test_fixed_staleness_2_period_is_t():
    res = simulate(CASE1, make_schedule("fixed-staleness", staleness=2), N)
    assert res.period_s == pytest.approx(10)
    assert sum(res.bubble_s) == 0
    # with M+U > T a fixed k=2 cannot keep T busy: period (M+T+U)/2 = 11
    res2 = simulate(CASE2, make_schedule("fixed-staleness", staleness=2), N)
    assert res2.period_s == pytest.approx(11)


# -------------------------------------------------------------------------------------- hand-checked schedules


def test_hand_checked_mspipe_schedule_case1():
    # On paper (S=1, F=1, M=2, T=10, U=2, D=2):
    # it0: S 0-1, F 1-2, k=1, M 2-4, T 4-14, U 14-16
    # it1: S 1-2, F 4-5 (after M0). At 5: T0 ends 14; k=1 needs U0(16)+2<=14 no; k=2: 5+2<=14 yes.
    #      delayed M1 = max(5, -, 14-2) = 12 -> M 12-14, T 14-24, U 24-26; no U done at 12: obs 1
    # it2: S 4-5 (after M0), F 14-15 (after M1). At 15: T1 ends 24, U0 ends 16: k=2 (16+2<=24),
    #      M2 = max(15, 16, 22) = 22 -> M 22-24, T 24-34, U 34-36; U0 done, U1 not: obs 1
    # it3: S 14-15 (after M1), F 24-25, k=2, M3 = max(25, 26, 32) = 32, T 34-44, U 44-46
    res = simulate(CASE1, make_schedule("mspipe"), 4)
    assert starts(res, "S") == [0, 1, 4, 14]
    assert starts(res, "F") == [1, 4, 14, 24]
    assert starts(res, "M") == [2, 12, 22, 32]
    assert starts(res, "T") == [4, 14, 24, 34]
    assert starts(res, "U") == [14, 24, 34, 44]
    assert res.k == [1, 2, 2, 2]
    assert res.observed_staleness == [0, 1, 1, 1]
    assert res.bubble_s == [0, 0, 0, 0]
    assert res.makespan_s == 46
    workers = {(r[0], r[1]): r[4] for r in res.timeline}
    assert workers[(2, "F")] == workers[(2, "M")] == "loader"
    assert workers[(2, "T")] == "trainer" and workers[(2, "U")] == "updater" and workers[(2, "S")] == "sampler"


def test_hand_checked_mspipe_schedule_case2():
    # S=1, F=1, M=6, T=10, U=6:
    # it0: S 0-1, F 1-2, M 2-8, T 8-18, U 18-24
    # it1: F 8-9; at 9: T0 ends 18; k=2: 9+6<=18 -> M1 = max(9, 18-6) = 12; T 18-28; U 28-34
    # it2: F 18-19; at 19: T1 ends 28; k=2: U0(24)+6 > 28; k=3: 19+6<=28 -> M2 = 22; U0 ends 24: obs 2
    # it3: F 28-29; at 29: T2 ends 38; k=2: U1(34)+6 > 38; k=3: max(29, U0=24)+6 <= 38 -> M3 = 32; obs 2
    res = simulate(CASE2, make_schedule("mspipe"), 4)
    assert starts(res, "M") == [2, 12, 22, 32]
    assert starts(res, "T") == [8, 18, 28, 38]
    assert res.k == [1, 2, 3, 3]
    assert res.observed_staleness == [0, 1, 2, 2]


# -------------------------------------------------------------------------------------- invariants


def _check_invariants(res, sched):
    start = {(r[1], r[0]): r[2] for r in res.timeline}
    end = {(r[1], r[0]): r[3] for r in res.timeline}
    for (stage, i), s in start.items():
        k = res.k[i] if stage == "M" else 1
        for pre in rules.prerequisites(sched, stage, i, k):
            assert s >= end[pre] - 1e-9, (stage, i, pre)
    by_worker = {}
    for r in res.timeline:
        by_worker.setdefault(r[4], []).append((r[2], r[3]))
    for ivs in by_worker.values():
        ivs.sort()
        for (s0, e0), (s1, _) in zip(ivs, ivs[1:]):
            assert s1 >= e0 - 1e-9  # one stage at a time per worker
    for i, obs in enumerate(res.observed_staleness):
        assert 0 <= obs <= res.k[i] - 1


@pytest.mark.parametrize("seed", range(6))
def test_observed_staleness_never_exceeds_bound_random_tau(seed):
    rng = random.Random(seed)
    n = 40
    tau = random_tau(rng, n)
    for trainer in TRAINERS:
        sched = make_schedule(trainer, staleness=rng.randint(1, 3), max_staleness=rng.randint(1, 4),
                              prefetch=rng.randint(1, 3))
        res = simulate(tau, sched, n)
        _check_invariants(res, sched)
        if trainer in ("sequential", "presample"):
            assert res.observed_staleness == [0] * n
        if trainer == "fixed-staleness":
            assert res.k == [sched.staleness] * n


@pytest.mark.parametrize("seed", range(4))
def test_no_bubble_means_observed_staleness_at_least_one(seed):
    # docs/design.md §2 implies: U(i-1) runs after T(i-1), and M(i) must end before T(i-1) ends for T not to
    # wait, so an iteration without a bubble can never see U(i-1): observed staleness >= 1.
    rng = random.Random(100 + seed)
    n = 40
    tau = random_tau(rng, n)
    for trainer in ("presample", "fixed-staleness", "mspipe"):
        res = simulate(tau, make_schedule(trainer), n)
        for i in range(1, n):
            if res.bubble_s[i] == 0:
                assert res.observed_staleness[i] >= 1, (trainer, i)


def test_mspipe_tiny_memory_stages_staleness_is_one_not_zero():
    # M+U tiny versus T: k = 2 and observed staleness exactly 1 (the least possible without bubbles);
    # 0 would need T to wait for U(i-1) + M(i), which is what presample does (and pays in bubbles).
    tau = {"S": 0.1, "F": 0.1, "M": 0.01, "T": 10, "U": 0.01}
    res = simulate(tau, make_schedule("mspipe"), N)
    assert set(res.k[1:]) == {2}
    assert res.observed_staleness[1:] == [1] * (N - 1)
    assert res.bubble_share == 0
    pre = simulate(tau, make_schedule("presample"), N)
    assert pre.observed_staleness == [0] * N and pre.bubble_share > 0


# -------------------------------------------------------------------------------------- delayed fetch


def test_delayed_fetch_not_staler_than_fixed_staleness_constant_tau():
    for tau, k in ((CASE1, 2), (CASE2, 3)):
        ms = simulate(tau, make_schedule("mspipe"), N)
        fx = simulate(tau, make_schedule("fixed-staleness", staleness=k), N)
        assert all(a <= b for a, b in zip(ms.observed_staleness, fx.observed_staleness))
        # with constant stage times the minimal bound is tight: staleness is exactly k_min - 1
        assert ms.observed_staleness[k:] == [k - 1] * (N - k)
    # an over-provisioned fixed bound is staler than mspipe at the same throughput
    ms = simulate(CASE1, make_schedule("mspipe"), N)
    fx3 = simulate(CASE1, make_schedule("fixed-staleness", staleness=3), N)
    assert ms.period_s == fx3.period_s
    assert ms.mean_observed_staleness < fx3.mean_observed_staleness


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_delayed_fetch_reduces_staleness_random_tau(seed):
    rng = random.Random(seed)
    n = 120
    base = {"S": 1, "F": 1, "M": rng.uniform(0.5, 6), "T": 10, "U": rng.uniform(0.5, 6)}
    tau = {s: [m * rng.uniform(0.5, 1.5) for _ in range(n)] for s, m in base.items()}
    ms = simulate(tau, make_schedule("mspipe"), n)
    early = simulate(tau, make_schedule("mspipe"), n, delayed_fetch=False)
    fx = simulate(tau, make_schedule("fixed-staleness", staleness=max(ms.k)), n)
    assert ms.mean_observed_staleness <= early.mean_observed_staleness
    assert ms.mean_observed_staleness <= fx.mean_observed_staleness
    for i in range(n):  # same bound, later read: never staler
        if ms.k[i] == early.k[i]:
            assert ms.observed_staleness[i] <= early.observed_staleness[i]
    assert ms.mean_observed_staleness < fx.mean_observed_staleness


# -------------------------------------------------------------------------------------- bubbles


def test_mspipe_bubbles_zero_when_cap_suffices():
    res = simulate(CASE2, make_schedule("mspipe", max_staleness=3), N)
    assert res.bubble_s == [0.0] * N and res.bubble_share == 0 and not res.infeasible


def test_mspipe_bubbles_when_cap_too_small():
    # M+U = 12 > (k_max - 1) T = 10: k = k_max = 2 and T waits: period (M+T+U)/2 = 11
    res = simulate(CASE2, make_schedule("mspipe", max_staleness=2), N)
    assert res.infeasible and set(res.k[1:]) == {2}
    assert res.period_s == pytest.approx(11)
    assert res.bubble_share > 0 and sum(res.bubble_s[-10:]) == pytest.approx(10)  # 0, 2, 0, 2, ...: 1 per iteration
    # M+U > k_max * T
    tau = {"S": 1, "F": 1, "M": 9, "T": 10, "U": 12}
    res = simulate(tau, make_schedule("mspipe", max_staleness=2), N)
    assert res.bubble_share > 0
    assert res.period_s == pytest.approx((9 + 10 + 12) / 2)


def test_loader_bound_picks_smallest_useful_k():
    # F+M = 8 > T = 6: no k avoids T waiting (the loader is the bottleneck); choose_staleness returns the
    # smallest k that lets M start as early as the cap would, not the cap itself.
    tau = {"S": 2, "F": 2, "M": 6, "T": 6, "U": 6}
    res = simulate(tau, make_schedule("mspipe", max_staleness=4), N)
    assert len(res.infeasible) == N - 1
    assert set(res.k[3:]) == {3}
    assert res.period_s == pytest.approx(8)
    capped = simulate(tau, make_schedule("mspipe", max_staleness=3), N)
    assert capped.period_s == res.period_s


def test_choose_staleness_and_now_clamp_directly():
    sched = make_schedule("mspipe", max_staleness=4)
    tau = {"S": 1, "F": 1, "M": 2, "T": 10, "U": 2}
    view = rules.TimelineView(sched, tau.__getitem__)
    view.start.update({("T", 0): 4.0})
    view.end.update({("S", 0): 1.0, ("F", 0): 2.0, ("M", 0): 4.0})
    assert view.predicted_end("T", 0) == 14
    assert rules.choose_staleness(view, 1, 5.0) == (2, True)
    # T(0) ran longer than estimated: at now=20 it still has not ended, so it ends no earlier than 20
    view.now = 20.0
    assert view.predicted_end("T", 0) == 20
    assert view.predicted_end("U", 0) == 22  # not started: starts no earlier than now


def test_delayed_fetch_only_where_there_is_memory_to_see():
    """mspipe delays M(i) to the latest start that still ends before T(i-1) ends; with delay_fetch off (a model
    without memory: nothing to see by waiting) M(i) starts when F(i) and U(i-k) allow."""
    tau = {"S": 1, "F": 1, "M": 2, "T": 10, "U": 2}
    for delay, expected in ((True, 14 - 2), (False, 5.0)):
        view = rules.TimelineView(make_schedule("mspipe", delay_fetch=delay), tau.__getitem__)
        view.start.update({("T", 0): 4.0})
        view.end.update({("S", 0): 1.0, ("F", 0): 2.0, ("M", 0): 4.0})
        # k = 2: U(-1) does not exist, so only F(1) (ended at 5) and, when delaying, T(0)'s end (14) - tau_M
        assert rules.delayed_fetch_start(view, 1, 5.0, 2) == expected


# -------------------------------------------------------------------------------------- inputs


def test_per_iteration_list_input_matches_constants():
    n = 30
    lists = {s: [v] * n for s, v in CASE2.items()}
    for trainer in TRAINERS:
        a = simulate(lists, make_schedule(trainer), None)
        b = simulate(CASE2, make_schedule(trainer), n)
        assert a.timeline == b.timeline and a.k == b.k
    # first iterations only
    assert simulate(lists, make_schedule("mspipe"), 10).iterations == 10


def test_stage_time_input_errors():
    with pytest.raises(ValueError, match="missing stage 'U'"):
        stage_times({"S": 1, "F": 1, "M": 1, "T": 1}, 5)
    with pytest.raises(ValueError, match=">= 0"):
        stage_times({**CASE1, "M": -1}, 5)
    with pytest.raises(ValueError, match="differ in length"):
        stage_times({s: [1] * (3 if s == "T" else 4) for s in rules.STAGES})
    with pytest.raises(ValueError, match="cover only"):
        stage_times({s: [1, 1] for s in rules.STAGES}, 3)
    with pytest.raises(ValueError, match="all zero"):
        stage_times({s: 0 for s in rules.STAGES}, 3)


def test_cold_warmup_uses_the_warmup_bound_until_estimates_exist():
    res = simulate(CASE1, make_schedule("mspipe", max_staleness=4), 20, warmup="cold")
    assert res.k[1] == rules.WARMUP_STALENESS and res.k[-1] == 2
    assert any("cold start" in note for note in res.notes)
    _check_invariants(res, make_schedule("mspipe", max_staleness=4))


def test_parse_tau():
    assert parse_tau("S=1,F=1,M=2,T=10,U=2") == CASE1
    assert parse_tau("S=5ms,F=1e-3,M=2s,T=10,U=0")["S"] == pytest.approx(0.005)
    for bad, msg in (("S=1,F=1,M=2,T=10", "missing stage 'U'"), ("S=1,F=x,M=2,T=10,U=2", "not a number"),
                     ("S=1,F=-1,M=2,T=10,U=2", ">= 0"), ("S=1,F=1,M=2,T=10,U=2,X=1", "unknown stage"),
                     ("S=1,F=1,M=2,T=10,U", "STAGE=SECONDS")):
        with pytest.raises(ValueError, match=msg):
            parse_tau(bad)


def _result_dict():
    def it(epoch, i, t):
        return {"epoch": epoch, "i": i, "durations": {"S": 1, "F": 1, "M": 2, "T": t, "U": 2}}

    iters = [it(0, i, 10) for i in range(4)] + [it(1, i, 20) for i in range(2)]  # epoch 1 truncated
    return {"config": {"batch_size": 200}, "iterations": iters}


def test_timeline_from_result():
    result = _result_dict()
    st = timeline_from_result(result)
    assert len(st) == 4 and st.batch_size == 200 and st.per_iteration[0]["T"] == 10
    assert len(timeline_from_result(result, "all")) == 6
    assert timeline_from_result(result, 1).per_iteration[0]["T"] == 20
    res = simulate(st, make_schedule("sequential"))
    assert res.batch_size == 200 and res.makespan_s == pytest.approx(4 * 16)
    bad = _result_dict()
    del bad["iterations"][2]["durations"]["M"]
    with pytest.raises(ValueError, match="missing stage 'M'"):
        timeline_from_result(bad)
    gap = _result_dict()
    del gap["iterations"][1]
    gap["iterations"] = [x for x in gap["iterations"] if x["epoch"] == 0]
    with pytest.raises(ValueError, match="no complete epoch"):
        timeline_from_result(gap)
    with pytest.raises(ValueError, match="batch_size"):
        timeline_from_result({"iterations": result["iterations"]})


def test_cli_from_result(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_result_dict()))
    assert main(["simulate", "--from", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"]["iterations"] == 4 and out["input"]["batch_size"] == 200
    assert out["trainers"]["sequential"]["period_s"] == pytest.approx(16)
    assert main(["simulate", "--from", str(path)]) == 0
    assert "SIMULATED" in capsys.readouterr().out


# -------------------------------------------------------------------------------------- profiles


def test_shipped_profile_loads_and_is_labelled():
    from pathlib import Path

    import mspipe_bench.harness

    path = Path(mspipe_bench.harness.__file__).parent / "profiles" / "gpu_example.yaml"
    profiles = load_profile(path)
    assert len(profiles) >= 2
    for p in profiles:
        assert "not a measurement" in p.source
        assert p.units == "ms" and p.tau["T"] < 1  # converted to seconds
        assert p.tau["T"] < sum(v for s, v in p.tau.items() if s != "T")  # GPU-like: T short
    assert {rules.k_min_steady_state(p.tau["M"], p.tau["U"], p.tau["T"]) for p in profiles} >= {2, 3}


def _write_profile(tmp_path, entry_extra=None, tau=None, top_extra=None, drop=()):
    tau = tau if tau is not None else {"S": 1, "F": 1, "M": 2, "T": 10, "U": 2}
    entry = {"model": "tgn", "dataset": "x", "batch_size": 600, "tau": tau, "note": "n", **(entry_extra or {})}
    import yaml

    doc = {"source": {"kind": "hand-made", "reference": "test"}, "hardware": "none", "units": "ms",
           "caveats": [], "profiles": [entry], **(top_extra or {})}
    for key in drop:
        del doc[key]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"tau": {"S": 1, "F": 1, "M": 2, "T": 10}}, "tau.U"),
        ({"tau": {"S": 1, "F": 1, "M": -2, "T": 10, "U": 2}}, "tau.M"),
        ({"tau": {"S": 1, "F": "fast", "M": 2, "T": 10, "U": 2}}, "tau.F"),
        ({"tau": {"S": 1, "F": 1, "M": 2, "T": 10, "U": 2, "X": 1}}, "tau.X"),
        ({"entry_extra": {"gpu": "a100"}}, "gpu"),
        ({"top_extra": {"author": "me"}}, "author"),
    ],
)
def test_profile_errors_name_file_and_key(tmp_path, kwargs, key):
    path = _write_profile(tmp_path, **kwargs)
    with pytest.raises(ValueError) as exc:
        load_profile(path)
    assert str(path) in str(exc.value) and key in str(exc.value)


# -------------------------------------------------------------------------------------- CLI


def test_cli_json_tau(capsys):
    assert main(["simulate", "--tau", "S=1,F=1,M=2,T=10,U=2", "--iterations", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"]["tau_s"] == CASE1 and out["input"]["k_min_steady_state"] == 2
    tr = out["trainers"]
    assert list(tr) == list(TRAINERS)
    assert tr["sequential"]["speedup_vs_sequential"] == 1.0
    assert tr["sequential"]["period_s"] == pytest.approx(16)
    assert tr["presample"]["period_s"] == pytest.approx(14)
    assert tr["mspipe"]["period_s"] == pytest.approx(10) and tr["mspipe"]["k"]["max"] == 2
    assert tr["mspipe"]["max_observed_staleness"] == 1 and tr["mspipe"]["bubble_share"] == 0
    assert tr["mspipe"]["speedup_vs_sequential"] == pytest.approx(50 * 16 / (10 * 50 + 6))
    for d in tr.values():
        assert {"events_per_s", "period_s", "speedup_vs_sequential", "k", "mean_observed_staleness",
                "max_observed_staleness", "bubble_share"} <= set(d)


def test_cli_human_and_profile(capsys):
    assert main(["simulate", "--tau", "S=1ms,F=1ms,M=2ms,T=10ms,U=2ms", "--iterations", "30",
                 "--trainers", "mspipe,fixed-staleness", "--per-iteration", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["trainers"]) == ["mspipe", "fixed-staleness"]
    assert out["trainers"]["mspipe"]["period_s"] == pytest.approx(0.010)
    assert len(out["trainers"]["mspipe"]["k"]["values"]) == 30
    assert main(["simulate", "--tau", "S=1,F=1,M=2,T=10,U=2", "--iterations", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("SIMULATED") and "mspipe" in text and "bubble share" in text
    from pathlib import Path

    import mspipe_bench.harness

    prof = Path(mspipe_bench.harness.__file__).parent / "profiles" / "gpu_example.yaml"
    assert main(["simulate", "--profile", str(prof), "--iterations", "20", "--json"]) == 0
    objs = json.loads(capsys.readouterr().out)
    assert isinstance(objs, list) and len(objs) == len(load_profile(prof))
    assert "not a measurement" in objs[0]["input"]["source"]


@pytest.mark.parametrize("tau,msg", [("S=1,F=1,M=2,T=10", "missing stage 'U'"),
                                     ("S=1,F=abc,M=2,T=10,U=2", "not a number"),
                                     ("S=1,F=1,M=-2,T=10,U=2", ">= 0")])
def test_cli_bad_tau_exit_2(capsys, tau, msg):
    assert main(["simulate", "--tau", tau]) == 2
    err = capsys.readouterr().err
    assert "error" in err and msg in err


def test_cli_bad_trainer_exit_2(capsys):
    assert main(["simulate", "--tau", "S=1,F=1,M=2,T=10,U=2", "--trainers", "mspipe,magic"]) == 2
    assert "magic" in capsys.readouterr().err


def test_simulator_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, mspipe_bench.trainers.simulator, mspipe_bench.harness.cmd_simulate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -------------------------------------------------------------------------------------- contention

# Digests of the contention-free simulator before contention existed (commit 41731f4, simulator.py before the
# split): sha256 of repr((timeline, k, observed staleness, period)) and the exact makespan, per input and
# trainer (fixed-staleness k=2, mspipe k_max=4, prefetch 2). repr of a float is exact, so equal digests mean
# bit-identical schedules.
GNNFLOW_TGN = {"S": 107.81, "F": 40.05, "M": 55.89, "T": 133.27, "U": 29.52}
GNNFLOW_TGAT = {"S": 1615.54, "F": 1233.05, "M": 0.0, "T": 1139.23, "U": 0.0}
GPU_EXAMPLE_APAN = {"S": 0.004, "F": 0.003, "M": 0.010, "T": 0.020, "U": 0.011}
BEFORE_CONTENTION = {
    ("gnnflow-tgn", "sequential"): ("73307.99999999965", "d43c24262e4121a3"),
    ("gnnflow-tgn", "presample"): ("43920.8499999997", "5b93d852f66fee5e"),
    ("gnnflow-tgn", "fixed-staleness"): ("26887.270000000073", "07a72544bc45a85b"),
    ("gnnflow-tgn", "mspipe"): ("26887.270000000073", "c682f3da9b09e5a8"),
    ("gnnflow-tgat", "sequential"): ("797564.0000000013", "71ed515db0a0a209"),
    ("gnnflow-tgat", "presample"): ("570857.2299999981", "fbe051fdcae072f5"),
    ("gnnflow-tgat", "fixed-staleness"): ("325480.2799999996", "7edf1bc32c7ba931"),
    ("gnnflow-tgat", "mspipe"): ("325480.2799999996", "cce3f65c4da011c5"),
    ("gpu-example-apan", "sequential"): ("9.59999999999987", "44c2648b4d7936b0"),
    ("gpu-example-apan", "presample"): ("8.206999999999937", "c7a3dc20fe6ae3f7"),
    ("gpu-example-apan", "fixed-staleness"): ("4.126999999999994", "8e4c8bec724b13e0"),
    ("gpu-example-apan", "mspipe"): ("4.028000000000003", "b7a12df6d62359de"),
    ("random-seed7", "sequential"): ("749.9259999999999", "f433e8e714ecef1e"),
    ("random-seed7", "presample"): ("512.3620000000002", "6683383b50003d66"),
    ("random-seed7", "fixed-staleness"): ("328.346", "361366caf99d1ea5"),
    ("random-seed7", "mspipe"): ("318.5920000000001", "060974ad858d0a5d"),
}


def _before_contention_inputs():
    rng = random.Random(7)
    per_iteration = {s: [round(rng.uniform(0.2, 6.0), 3) for _ in range(50)] for s in rules.STAGES}
    return {"gnnflow-tgn": (GNNFLOW_TGN, 200), "gnnflow-tgat": (GNNFLOW_TGAT, 200),
            "gpu-example-apan": (GPU_EXAMPLE_APAN, 200), "random-seed7": (per_iteration, None)}


def _digest(res):
    import hashlib

    text = repr((res.timeline, res.k, res.observed_staleness, res.period_s))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("contention", [None, 1.0, Contention(factor=1.0, pairs={"F+T": 1.0})])
def test_contention_factor_one_reproduces_the_contention_free_simulator(contention):
    for name, (tau, n) in _before_contention_inputs().items():
        for trainer in TRAINERS:
            res = simulate(tau, make_schedule(trainer, staleness=2), n, contention=contention)
            assert (repr(res.makespan_s), _digest(res)) == BEFORE_CONTENTION[(name, trainer)], (name, trainer)


def test_hand_computed_two_iteration_schedule_with_contention():
    """S=1, F=1, M=2, T=4, U=2 (work in seconds alone), one global factor 2: a stage overlapping any other
    drains its work at 1/2 per second. fixed-staleness k=2, prefetch 2; threads sampler S, loader F+M,
    trainer T, updater U.

    t=0  S0 alone: 0-1.
    t=1  F0 (after S0) and S1 (after S0; M(-1) does not exist) overlap: each does 1 unit in 2 s: both end 3.
    t=3  M0 (after F0; U(-2) does not exist) alone: 3-5.
    t=5  T0 (after M0) and F1 (after S1, M0) overlap: F1 ends 7; T0 has done 1 of 4 units.
    t=7  M1 (after F1; k=2: U(-1) does not exist) starts beside T0: M1 does 2 units in 4 s, ends 11;
         T0 does 2 more units by 11, its last unit alone: ends 12.
    t=12 U0 (after T0) and T1 (after M1, T0) overlap: U0's 2 units take 4 s, ends 16; T1 has done 2 of 4,
         the other 2 alone: ends 18.
    t=18 U1 (after T1, U0) alone: 18-20.  Makespan 20, against 14 without contention.

    presample (threads sampler S+F, trainer M+T+U), same stage times, factor 2; then with the pair S+M at 1:
    t=0 S0 0-1, F0 1-2 (alone). t=2 M0 and S1 overlap: S1's 1 unit ends 4, M0 has 1 of 2 left, alone: 5.
    t=5 T0 and F1 overlap: F1 ends 7, T0 has 3 left, alone: ends 10. U0 10-12, M1 12-14 (k=1: after U0),
    T1 14-18, U1 18-20: makespan 20 (sequential's 20: no gain at factor 2).
    With S+M = 1: S1 2-3 and M0 2-4 at full speed; F1 (after M0) and T0 start at 4 and overlap at factor 2:
    F1 ends 6, T0 has 3 units left at 6: ends 9; U0 9-11, M1 11-13, T1 13-17, U1 17-19.
    """
    tau = {"S": 1, "F": 1, "M": 2, "T": 4, "U": 2}

    def spans(res):
        return {(r[1], r[0]): (r[2], r[3]) for r in res.timeline}

    res = simulate(tau, make_schedule("fixed-staleness", staleness=2), 2, contention=2.0)
    assert spans(res) == {
        ("S", 0): (0, 1), ("F", 0): (1, 3), ("S", 1): (1, 3), ("M", 0): (3, 5), ("T", 0): (5, 12),
        ("F", 1): (5, 7), ("M", 1): (7, 11), ("U", 0): (12, 16), ("T", 1): (12, 18), ("U", 1): (18, 20),
    }
    assert res.makespan_s == 20 and res.k == [2, 2]
    assert simulate(tau, make_schedule("fixed-staleness", staleness=2), 2).makespan_s == 14

    pre = simulate(tau, make_schedule("presample"), 2, contention=2.0)
    assert spans(pre) == {
        ("S", 0): (0, 1), ("F", 0): (1, 2), ("M", 0): (2, 5), ("S", 1): (2, 4), ("T", 0): (5, 10),
        ("F", 1): (5, 7), ("U", 0): (10, 12), ("M", 1): (12, 14), ("T", 1): (14, 18), ("U", 1): (18, 20),
    }
    paired = simulate(tau, make_schedule("presample"), 2, contention=Contention(factor=2, pairs={"M+S": 1}))
    assert spans(paired) == {
        ("S", 0): (0, 1), ("F", 0): (1, 2), ("M", 0): (2, 4), ("S", 1): (2, 3), ("T", 0): (4, 9),
        ("F", 1): (4, 6), ("U", 0): (9, 11), ("M", 1): (11, 13), ("T", 1): (13, 17), ("U", 1): (17, 19),
    }


@pytest.mark.parametrize("seed", range(4))
def test_contention_keeps_the_rules_and_stretches_only_overlapped_stages(seed):
    rng = random.Random(300 + seed)
    n = 30
    tau = random_tau(rng, n)
    factor = rng.uniform(1.1, 3.0)
    for trainer in TRAINERS:
        sched = make_schedule(trainer, staleness=rng.randint(1, 3), max_staleness=rng.randint(2, 4))
        res = simulate(tau, sched, n, contention=factor)
        _check_invariants(res, sched)
        spans = {(r[1], r[0]): (r[2], r[3]) for r in res.timeline}
        for (stage, i), (s, e) in spans.items():
            work = tau[stage][i]
            others = [v for k, v in spans.items() if k != (stage, i) and v[0] < e and v[1] > s]
            assert e - s >= work - 1e-9 and e - s <= factor * work + 1e-9
            if not others:  # ran alone: exactly its stage time
                assert e - s == pytest.approx(work)
        if trainer == "sequential":  # nothing overlaps: contention changes nothing
            assert res.timeline == simulate(tau, sched, n).timeline


def test_contention_spec_parsing_and_pairs():
    c = parse_contention("1.5,T+F=2,S+T=1")
    assert c.factor == 1.5 and c.pairs == {"F+T": 2.0, "S+T": 1.0}
    assert c.slowdown("T", ["F", "U"]) == 2.0 and c.slowdown("T", ["S"]) == 1.0 and c.slowdown("M", []) == 1.0
    assert c.slowdown("U", ["M"]) == 1.5
    at_least_1 = "(>=|greater than or equal to) 1"
    for bad, msg in (("0.9", at_least_1), ("x", "global factor"), ("1.2,F+F=2", "two different stages"),
                     ("1.2,F+X=2", "two stages joined"), ("1.2,F+T", "STAGE[+]STAGE=FACTOR"),
                     ("1.2,F+T=0.5", at_least_1)):
        with pytest.raises(UserError, match=msg):
            parse_contention(bad)
    assert parse_factors("1, 1.5,2,1.5") == [1.0, 1.5, 2.0]
    for bad in ("", "1,0.5", "1,inf", "a"):
        with pytest.raises(UserError):
            parse_factors(bad)


def test_contention_for_speedup_finds_the_factor():
    from mspipe_bench.trainers.simulator import contention_for_speedup, sweep_contention

    rows = sweep_contention(GNNFLOW_TGN, [1.0, 1.5, 2.0], ("presample", "mspipe"), iterations=60)
    assert rows[0]["mspipe"] > rows[1]["mspipe"] > rows[2]["mspipe"]
    assert rows[2]["presample"] == pytest.approx(1.0, abs=0.01)  # two lanes, always overlapped, factor 2
    f = contention_for_speedup(GNNFLOW_TGN, "mspipe", 2.0, iterations=60, tol=1e-6)
    assert 1.0 < f < 1.5
    assert sweep_contention(GNNFLOW_TGN, [f], ("mspipe",), iterations=60)[0]["mspipe"] == pytest.approx(2.0, abs=1e-4)
    assert contention_for_speedup(GNNFLOW_TGN, "mspipe", rows[0]["mspipe"] + 0.1, iterations=60) is None


# -------------------------------------------------------------------------------------- sourced profiles


def _shipped(name):
    from pathlib import Path

    import mspipe_bench.harness

    return Path(mspipe_bench.harness.__file__).parent / "profiles" / name


def test_published_gnnflow_profiles_carry_their_source():
    tgn = load_profile(_shipped("gnnflow_tgn_gdelt_4xa100.yaml"))
    tgat = load_profile(_shipped("gnnflow_tgat_gdelt_4xa100.yaml"))
    assert [p.tau for p in tgn][0] == GNNFLOW_TGN  # units s: the PR's seconds unchanged
    assert [p.variant for p in tgn] == ["without pre-sampling", "with pre-sampling",
                                        "with pre-sampling, GIL released in sampling"]
    assert tgat[0].tau == GNNFLOW_TGAT and tgat[1].tau["S"] == 601.47
    for p in tgn + tgat:
        assert p.source_detail["kind"] == "published measurement"
        assert p.source_detail["repository"] == "jasperzhong/GNNFlow" and "#102" in p.source_detail["reference"]
        assert p.source_detail["table"] and "A100" in p.hardware and p.per_epoch_sums
        assert any("time.time()" in c for c in p.caveats) and p.batch_size in (4000, 600)
    assert any("Memory Update" in c for c in tgn[0].caveats) and any("rank 0" in c for c in tgn[0].caveats)


def test_profile_without_source_is_refused(tmp_path, capsys):
    path = _write_profile(tmp_path, drop=("source",))
    with pytest.raises(UserError) as exc:
        load_profile(path)
    assert str(path) in str(exc.value) and "missing field 'source'" in str(exc.value)
    assert main(["simulate", "--profile", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing field 'source'" in err and str(path) in err
    # the old format (source as free text) is refused too, naming the field and the value
    old = _write_profile(tmp_path, top_extra={"source": "a paper"})
    with pytest.raises(UserError, match="field 'source'.*'a paper'"):
        load_profile(old)


def test_cli_profile_prints_source_and_contention(capsys):
    prof = _shipped("gnnflow_tgn_gdelt_4xa100.yaml")
    assert main(["simulate", "--profile", str(prof), "--iterations", "40", "--trainers", "presample,mspipe"]) == 0
    out = capsys.readouterr().out
    assert "source: published measurement: GNNFlow pull request #102" in out
    assert "hardware: 4x NVIDIA A100" in out and "caveat:" in out and "contention: none" in out
    assert main(["simulate", "--profile", str(prof), "--iterations", "40", "--contention", "1.5", "--json"]) == 0
    objs = json.loads(capsys.readouterr().out)
    assert objs[0]["input"]["contention"] == {"factor": 1.5, "pairs": {}}
    assert objs[0]["input"]["source_detail"]["kind"] == "published measurement"
    free = simulate(GNNFLOW_TGN, make_schedule("mspipe"), 40)
    slowed = simulate(GNNFLOW_TGN, make_schedule("mspipe"), 40, contention=1.5)
    assert objs[0]["trainers"]["mspipe"]["makespan_s"] == slowed.makespan_s > free.makespan_s


def test_cli_sweep_contention_table_json_and_figure(tmp_path, capsys):
    fig = tmp_path / "sweep.png"
    args = ["simulate", "--tau", "S=107.81,F=40.05,M=55.89,T=133.27,U=29.52", "--iterations", "40",
            "--sweep-contention", "1,1.5,2", "--figure", str(fig)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "contention factor" in out and "mspipe speedup: 2.45x at factor" in out and f"wrote {fig}" in out
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args + ["--json"]) == 0
    obj = json.loads(capsys.readouterr().out)[0]
    assert [r["factor"] for r in obj["sweep"]] == [1.0, 1.5, 2.0]
    ref = summarize(simulate_trainers(GNNFLOW_TGN, iterations=40))
    for t in ("presample", "fixed-staleness", "mspipe"):
        assert obj["sweep"][0][t] == ref[t]["speedup_vs_sequential"]
    assert 1.0 < obj["factor_at_speedup"]["mspipe"]["2.45"] < obj["factor_at_speedup"]["mspipe"]["1.5"]
    (tmp_path / "taken.png").mkdir()  # a directory where the figure file should go: refused before simulating
    assert main(args[:-2] + ["--figure", str(tmp_path / "taken.png")]) == 2


def test_cpu_contention_reference_inverts_the_stage_speed():
    import importlib.util
    from pathlib import Path

    from mspipe_bench.trainers.simulator import sweep_contention

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_contention_reference.py"
    spec = importlib.util.spec_from_file_location("cpu_contention_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stage_ms = {"S": 4.0, "F": 1.0, "M": 3.0, "T": 10.0, "U": 3.0}
    paired = {"staleness": 2, "models": [{
        "model": "m", "block_iterations": 20, "rounds": [{"sequential": {"stage_ms": stage_ms}}] * 3,
        "summary": {"sequential": {"stage_speed_median": 1.0}, "presample": {"stage_speed_median": 1.02},
                    "mspipe": {"stage_speed_median": 0.9}},
    }]}
    rows = {r["trainer"]: r for r in mod.reference(paired)}
    assert rows["presample"]["contention_factor"] == 1.0  # no slower beside each other: no contention
    c = rows["mspipe"]["contention_factor"]
    tau = {s: v / 1000 for s, v in stage_ms.items()}
    slowed = sweep_contention(tau, [c], ["mspipe"], iterations=20)[0]["mspipe"]
    assert c > 1 and slowed / rows["mspipe"]["simulated_speedup_at_1"] == pytest.approx(0.9, abs=1e-3)

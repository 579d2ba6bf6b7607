"""``compare``: the tolerances file (pydantic-validated; a bad file is one line naming file, key and value)
and the report table. The end-to-end comparisons of real result directories are in test_harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mspipe_bench.cli import main
from mspipe_bench.errors import UserError
from mspipe_bench.harness.compare import Check, Comparison, Tolerances, format_comparison, load_tolerances


def test_repository_tolerances_file_is_valid():
    tol = load_tolerances(Path(__file__).resolve().parents[1] / "baselines" / "tolerances.yaml")
    assert tol == Tolerances(ap_drop=0.01, speedup_drop=0.10, staleness_rise=0.5)


def test_missing_keys_keep_their_default(tmp_path):
    path = tmp_path / "tol.yaml"
    path.write_text("speedup_drop: 1\n")  # an integer is a number
    tol = load_tolerances(path)
    assert tol.speedup_drop == 1.0 and tol.ap_drop == Tolerances().ap_drop
    assert load_tolerances(None) == Tolerances()
    path.write_text("# only comments\n")
    assert load_tolerances(path) == Tolerances()


@pytest.mark.parametrize("text, needles", [
    ("ap_drops: 0.1\n", ["unknown key 'ap_drops' = 0.1", "allowed: ap_drop, speedup_drop, staleness_rise"]),
    ("ap_drop: -0.1\n", ["key 'ap_drop' = -0.1", "greater than or equal to 0"]),
    ("ap_drop: '0.1'\n", ["key 'ap_drop' = '0.1'", "must be a number"]),
    ("speedup_drop: true\n", ["key 'speedup_drop' = True", "must be a number"]),
    ("staleness_rise: .nan\n", ["key 'staleness_rise' = nan", "finite"]),
    ("staleness_rise:\n", ["key 'staleness_rise' = None"]),
    ("- ap_drop\n", ["expected a mapping of tolerances", "found list"]),
    ("ap_drop: [0.1\n", ["not valid YAML"]),
])
def test_bad_tolerances_file_names_file_key_and_value(tmp_path, capsys, text, needles):
    path = tmp_path / "tol.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_tolerances(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    # the command refuses it before reading any result (exit 2, one line on stderr)
    assert main(["compare", str(tmp_path / "none"), "--baseline", str(tmp_path / "none"),
                 "--tolerances", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and len(err.strip().splitlines()) == 1


def test_help_lists_the_tolerances_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, field in Tolerances.model_fields.items():
        assert f"{name} (default {field.default:g})" in out


def test_report_is_one_aligned_table_per_metric():
    checks = [Check("test AP", "tgn_synthetic_mspipe_s0 (e2 b600)", 0.91, 0.85, "-0.0600", ">= 0.9000", True),
              Check("test AP", "tgn_synthetic_presample_s0 (e2 b600)", 0.9, 0.9, "+0.0000", ">= 0.8900", False),
              Check("speedup over sequential", "tgn_synthetic_mspipe_s0 (e2 b600)", 1.2, 1.25, "+4.2%", ">= 1.080",
                    False)]
    text = format_comparison(Comparison(tolerances=Tolerances(), checks=checks, missing=["x"]))
    lines = text.splitlines()
    assert lines[0] == "== test AP =="
    header, rule, first, second = lines[1:5]
    assert header.split() == ["run", "baseline", "current", "change", "allowed", "verdict"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert first.split()[-1] == "REGRESSION" and second.split()[-1] == "ok"
    assert first.index("0.9100") + len("0.9100") == second.index("0.9000") + len("0.9000")  # numbers right-aligned
    assert "== speedup over sequential ==" in lines and "1.200x" in text
    assert "note: 1 baseline run(s) missing from the results: x" in text
    assert lines[-1] == ("FAIL: 1 regression(s) in 3 checks (tolerances: ap_drop=0.01, speedup_drop=0.1, "
                         "staleness_rise=0.5)")

"""benchmarks/distill_table.py: the issue-15 table from distill_diagnostics outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_table.py"
_SPEC = importlib.util.spec_from_file_location("distill_table", _PATH)
table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(table)


def _seed(kd, avg, up_kd, up_avg):
    kd_rows = [{"student_accuracy": kd, "bytes_up_per_client": {"1": up_kd, "2": up_kd}}]
    avg_rows = [{"student_accuracy": avg, "bytes_up_per_client": {"1": up_avg}}]
    return {"fedkd": kd_rows, "fedavg": avg_rows}


DIAG = {
    "results": [_seed(0.90, 0.95, 100, 1000), _seed(0.94, 0.95, 100, 1000)],
    "wall_s": 61.2,
    "argv": ["--seeds", "0", "1"],
    "models": ["mlp", "cnn", "mlp_wide"],
}


def test_row_has_means_sds_the_per_seed_difference_and_the_uplink_share():
    row = table.table_row("digits", DIAG)
    assert row["fedkd"] == pytest.approx((0.92, 0.0282843), rel=1e-5)
    assert row["fedavg"] == pytest.approx((0.95, 0.0))
    assert row["diff"] == pytest.approx(-0.03)
    assert row["uplink"] == pytest.approx(0.1)
    assert row["command"].endswith("distill_diagnostics.py --seeds 0 1")
    text = table.markdown([row])
    assert (
        "| digits | mlp, cnn, mlp_wide | 0.950 ± 0.000 | 0.920 ± 0.028 | -0.030 | 10.0 % |" in text
    )


def test_a_folder_or_a_file_is_read_and_a_bad_argument_exits_with_code_2(tmp_path, capsys):
    (tmp_path / "diagnostics.json").write_text(json.dumps(DIAG))
    table.main([f"a={tmp_path}", f"b={tmp_path / 'diagnostics.json'}"])
    out = capsys.readouterr().out
    assert "| a |" in out and "| b |" in out
    with pytest.raises(SystemExit) as err:
        table.main(["no-equals-sign"])
    assert err.value.code == 2


def _tune_csv(path, rows):
    cols = ["series", "method", "mechanism", "status", "seed", "student_accuracy"]
    cols += ["bytes_up_per_client_round", "wall_seconds"]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_a_tune_folder_gives_a_row_from_its_fedkd_and_fedavg_final_runs(tmp_path):
    def r(series, seed, acc, up, mech="none"):
        return {
            "series": series,
            "method": series.split("-")[0],
            "mechanism": mech,
            "status": "done",
            "seed": seed,
            "student_accuracy": acc,
            "bytes_up_per_client_round": up,
            "wall_seconds": 10.0,
        }

    rows = [r("fedkd", 0, 0.88, 600), r("fedkd", 1, 0.86, 600), r("fedavg-more", 0, 0.90, 6000)]
    rows += [r("fedavg-more", 1, 0.90, 6000), r("central", 0, 0.99, 0)]
    rows += [r("fedkd-dpsgd", 0, 0.5, 600, "dpsgd")]
    _tune_csv(tmp_path / "results.csv", rows)
    row = table._row(f"fmnist={tmp_path}")
    assert row["fedkd"] == pytest.approx((0.87, 0.0141421), rel=1e-5)
    assert row["fedavg"] == pytest.approx((0.90, 0.0))
    assert row["diff"] == pytest.approx(-0.03)
    assert row["uplink"] == pytest.approx(0.1)
    assert row["seeds"] == 2 and row["wall_s"] == pytest.approx(40.0)
    assert "fedkd tune" in row["command"]
    _tune_csv(tmp_path / "results.csv", [r("fedkd", 0, 0.88, 600)])
    with pytest.raises(ValueError, match="no seed with both"):
        table._row(f"fmnist={tmp_path}")


def test_a_tune_folder_with_two_non_private_fedkd_series_is_refused(tmp_path):
    base = {"mechanism": "none", "status": "done", "student_accuracy": 0.9}
    base |= {"bytes_up_per_client_round": 1, "wall_seconds": 1}
    rows = [
        {**base, "series": name, "method": name.split("-")[0], "seed": 0}
        for name in ("fedkd", "fedkd-digest", "fedavg")
    ]
    _tune_csv(tmp_path / "results.csv", rows)
    with pytest.raises(ValueError, match="more than one non-private fedkd series"):
        table._row(f"x={tmp_path}")

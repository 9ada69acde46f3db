"""``fedkd report``: tables from results.csv, headline pivot, marked blocks, --check, errors."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
import yaml
from fedkd.simulations.cli import main
from fedkd.simulations.report import load_rows, splice
from fedkd.simulations.report_tables import headline_table, results_table

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [
    "cell",
    "epsilon",
    "method",
    "mechanism",
    "seed",
    "target_epsilon",
    "status",
    "student_accuracy",
    "epsilon_example",
    "delta_example",
    "epsilon_client",
    "delta_client",
    "bytes_up",
    "bytes_up_per_client_round",
    "wall_seconds",
]
#: (method, mechanism, ε) -> accuracy of seeds 0, 1, 2.
ACC = {
    ("fedkd", "dpsgd", 1): [0.80, 0.82, 0.87],
    ("fedkd", "dpsgd", 2): [0.90, 0.91, 0.95],
    ("dp-fedavg", "gaussian", 1): [0.30, 0.40, 0.41],
    ("dp-fedavg", "gaussian", 2): [0.50, 0.52, 0.60],
}


def _rows(accounted: bool) -> list[dict]:
    rows = []
    for (method, mech, eps), accs in ACC.items():
        level = "example" if mech == "dpsgd" else "client"
        for seed, acc in enumerate(accs):
            row = {
                "cell": f"method={method}__epsilon={eps}__seed={seed}",
                "epsilon": eps,
                "method": method,
                "mechanism": mech,
                "seed": seed,
                "target_epsilon": float(eps),
                "status": "done",
                "student_accuracy": acc,
                f"epsilon_{level}": eps - 0.01 * seed,
                f"delta_{level}": 1e-5,
                "bytes_up": 1000 * (seed + 1),
                "bytes_up_per_client_round": 100.0,
                "wall_seconds": 2.0 + seed,
            }
            if accounted:
                pld = method == "fedkd"
                row["accountant"] = "pld" if pld else "flwr RdpAccountant"
                row["neighbouring"] = "replace_one" if pld else "add_remove"
            rows.append(row)
    single = {"cell": "method=central", "method": "central", "mechanism": "none", "seed": 0}
    single.update({"target_epsilon": "inf", "status": "done", "student_accuracy": 0.9612})
    single.update({"bytes_up": 0, "bytes_up_per_client_round": 0, "wall_seconds": 1.5})
    missing = {"cell": "method=central__seed=1", "method": "central", "mechanism": "none"}
    missing.update({"seed": 1, "target_epsilon": "inf", "status": "missing"})
    return [*rows, single, missing]


def _write_csv(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = COLUMNS + [k for k in rows[0] if k not in COLUMNS]
    with open(folder / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in columns} for r in rows)
    return folder


def _line(table: str, *start: str) -> list[str]:
    prefix = "| " + " | ".join(start) + " |"
    (line,) = [ln for ln in table.splitlines() if ln.startswith(prefix)]
    return [c.strip() for c in line.strip("|").split("|")]


def _expected(accs: list[float]) -> str:
    return f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"


def test_results_table_gives_mean_std_over_seeds_and_one_seed_without_a_std(tmp_path):
    table = results_table(load_rows(_write_csv(tmp_path / "s", _rows(accounted=True))))
    head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert "setting" not in head and "val accuracy (mean ± std)" not in head
    for (method, mech, eps), accs in ACC.items():
        cells = dict(zip(head, _line(table, method, mech, str(eps)), strict=True))
        assert cells["test accuracy (mean ± std)"] == _expected(accs)
        assert cells["seeds"] == "3"
        level = "example" if mech == "dpsgd" else "client"
        assert cells["measured ε"] == f"{eps - 0.01:.3f} ({level})"  # mean of eps - 0.01·seed
        assert cells["δ"] == "1e-05"
        assert cells["uplink B / run"] == "2,000" and cells["wall s / run"] == "3.0"
    central = dict(zip(head, _line(table, "central", "none", "∞"), strict=True))
    assert central["test accuracy (mean ± std)"] == "0.9612 (1 seed)"  # the missing seed
    assert central["seeds"] == "1" and central["measured ε"] == "—"  # is not counted
    assert "± 0.0000" not in table
    assert len(table.splitlines()) == 2 + len(ACC) + 1


def test_accountant_column_reads_the_csv_and_never_guesses(tmp_path):
    accounted = results_table(load_rows(_write_csv(tmp_path / "a", _rows(accounted=True))))
    assert _line(accounted, "fedkd", "dpsgd", "1")[7] == "PLD (replace-one)"
    assert _line(accounted, "dp-fedavg", "gaussian", "2")[7] == "Flower RDP (add/remove)"
    assert _line(accounted, "central", "none")[7] == "—"
    older = results_table(load_rows(_write_csv(tmp_path / "b", _rows(accounted=False))))
    assert _line(older, "fedkd", "dpsgd", "1")[7] == "not recorded"
    assert _line(older, "dp-fedavg", "gaussian", "1")[7] == "not recorded"


def test_headline_table_has_a_column_per_target_epsilon_and_a_row_per_series():
    table = headline_table(_rows(accounted=False))
    lines = table.splitlines()
    assert lines[0] == "| method | ε = 1 | ε = 2 | ε = ∞ |"
    assert lines[1] == "|---|---|---|---|"
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == [
        "fedkd, dpsgd (example-level)",
        "central, no DP",
        "dp-fedavg, gaussian (client-level)",
    ]
    fedkd = ACC[("fedkd", "dpsgd", 1)], ACC[("fedkd", "dpsgd", 2)]
    assert _line(table, "fedkd, dpsgd (example-level)")[1:] == [*map(_expected, fedkd), "—"]
    assert _line(table, "central, no DP")[1:] == ["—", "—", "0.9612 (1 seed)"]
    wide = headline_table(_rows(accounted=False), [1, 2, 4, 8, float("inf")])
    assert wide.splitlines()[0] == "| method | ε = 1 | ε = 2 | ε = 4 | ε = 8 | ε = ∞ |"
    assert _line(wide, "central, no DP")[1:] == ["—"] * 4 + ["0.9612 (1 seed)"]


def test_headline_chooses_among_settings_on_validation_only(tmp_path, capsys):
    rows = [dict(r, **{"clients.lr": lr}) for r in _rows(accounted=False) for lr in (0.1, 0.2)]
    folder = _write_csv(tmp_path / "s", rows)
    assert main(["report", str(folder), "--table", "headline"]) == 2
    err = capsys.readouterr().err
    assert "no val_accuracy" in err and len(err.strip().splitlines()) == 1
    for r in [r for r in rows if r["status"] == "done"]:  # lr 0.2: better on val, worse on test
        r["val_accuracy"] = 0.7 if r["clients.lr"] == 0.2 else 0.6
        r["student_accuracy"] = r["student_accuracy"] - (0.1 if r["clients.lr"] == 0.2 else 0.0)
    folder = _write_csv(tmp_path / "v", rows)
    assert main(["report", str(folder), "--table", "headline"]) == 0
    table = capsys.readouterr().out
    shifted = [a - 0.1 for a in ACC[("fedkd", "dpsgd", 1)]]
    assert _line(table, "fedkd, dpsgd (example-level)")[1] == _expected(shifted)
    full = results_table(load_rows(folder))
    assert "| setting |" in full and "| val accuracy (mean ± std) |" in full
    assert _line(full, "fedkd", "dpsgd", "1", "clients.lr=0.2")[4:6] == [
        _expected(shifted),
        "0.7000 ± 0.0000",
    ]


DOC_HEAD = "# Results\n\nProse that quotes 0.82 stays  \nas it is, ünïcode too.\n\n"
DOC_TAIL = "\nMore prose after the block.\n<!-- an ordinary comment -->\n"


def _doc(begin: str, body: str, end: str) -> str:
    return DOC_HEAD + begin + "\n" + body + end + "\n" + DOC_TAIL


def test_into_replaces_exactly_the_marked_block_and_check_detects_staleness(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text("")  # the repository root sources resolve from
    _write_csv(tmp_path / "results" / "s", _rows(accounted=True))
    begin = "<!-- fedkd-report:begin synth table=headline source=results/s/results.csv -->"
    end = "<!-- fedkd-report:end synth -->"
    doc = tmp_path / "docs" / "RESULTS.md"
    doc.parent.mkdir()
    doc.write_text(_doc(begin, "| old | typed | table |\n", end))
    assert main(["report", "--into", str(doc), "--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert "block synth is stale" in err and len(err.splitlines()) == 1
    assert main(["report", "--into", str(doc)]) == 0
    table = headline_table(load_rows(tmp_path / "results" / "s"))
    assert doc.read_text() == _doc(begin, "\n" + table + "\n", end)  # the rest byte for byte
    assert main(["report", "--into", str(doc), "--check"]) == 0
    rows = _rows(accounted=True)
    rows[0]["student_accuracy"] = 0.1  # the CSV changes: the block is stale again
    _write_csv(tmp_path / "results" / "s", rows)
    assert main(["report", "--into", str(doc), "--check"]) == 1
    assert "block synth is stale" in capsys.readouterr().err


@pytest.mark.parametrize(
    "block, message",
    [
        ("<!-- fedkd-report:begin a source=nope.csv -->\n<!-- fedkd-report:end a -->\n", "nope"),
        ("<!-- fedkd-report:begin a source=s -->\nno end\n", "no end marker"),
        ("<!-- fedkd-report:begin a source=s -->\n<!-- fedkd-report:end b -->\n", "without"),
        ("<!-- fedkd-report:begin a source=s table=pie -->\n<!-- fedkd-report:end a -->\n", "pie"),
        ("<!-- fedkd-report:begin a sauce=s -->\n<!-- fedkd-report:end a -->\n", "sauce"),
        ("<!-- fedkd-report:begin a  source=s-->\n", "malformed"),
    ],
)
def test_bad_markers_and_paths_are_one_line_errors(tmp_path, capsys, block, message):
    _write_csv(tmp_path / "s", _rows(accounted=False))
    (tmp_path / ".git").mkdir()
    doc = tmp_path / "R.md"
    doc.write_text("text\n" + block)
    assert main(["report", "--into", str(doc)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert doc.read_text() == "text\n" + block  # nothing written


def test_a_bad_path_is_a_one_line_error_with_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err == f"fedkd: error: report: no results.csv at {tmp_path / 'nowhere'}\n"
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(tmp_path / "x.csv")]) == 2
    assert "not a sweep's results.csv" in capsys.readouterr().err
    assert main(["report", "--into", str(tmp_path / "missing.md")]) == 2
    assert main(["report", str(tmp_path), "--into", str(tmp_path / "missing.md")]) == 2
    assert main(["report", "--into", str(tmp_path / "m.md"), "--table", "headline"]) == 2
    assert "markers say" in capsys.readouterr().err
    assert main(["report"]) == 2


def test_out_writes_the_table_and_check_compares_it(tmp_path, capsys):
    folder = _write_csv(tmp_path / "s", _rows(accounted=False))
    out = tmp_path / "t.md"
    assert main(["report", str(folder), "--out", str(out), "--check"]) == 1
    assert main(["report", str(folder), "--out", str(out)]) == 0
    assert out.read_text() == results_table(load_rows(folder))
    assert main(["report", str(folder), "--out", str(out), "--check"]) == 0
    two = _write_csv(tmp_path / "t", _rows(accounted=False)[:3])
    assert main(["report", str(folder), str(two)]) == 0  # two sweeps: one table
    assert _line(capsys.readouterr().out, "fedkd", "dpsgd", "1")[4] == "6"


TINY = {
    "seed": 0,
    "rounds": 1,
    "data": {"source": "digits"},
    "clients": {"num_clients": 2, "local_epochs": 1, "models": ["mlp"]},
    "distill": {"student": "mlp", "proxy_per_round": 20, "epochs": 1},
    "privacy": {"client_delta": 0.1},
    "runtime": {"backend": "inprocess"},
}


def test_a_real_tiny_sweep_is_reported_with_its_recorded_accountants(tmp_path, capsys):
    # σ given, not calibrated from a target ε (that search alone takes most of a minute).
    fixed = {"privacy.mechanisms": ["gaussian"], "privacy.gaussian.noise_multiplier": 2.0}
    spec = {"base": TINY, "grid": {"method": ["fedkd", "dp-fedavg"]}, "set": fixed}
    spec["set"]["privacy.max_epsilon"] = 50.0
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert (out / "results.md").read_text() == table  # the sweep's own table is this one
    fedkd = _line(table, "fedkd", "gaussian", "50")
    dp = _line(table, "dp-fedavg", "gaussian", "50")
    assert fedkd[3].endswith("(1 seed)") and fedkd[4] == "1"
    assert fedkd[7] == "PLD (replace-one)" and dp[7] == "Flower RDP (add/remove)"
    assert fedkd[5].endswith("(client)") and 0 < float(fedkd[5].split()[0]) <= 50.0
    assert fedkd[6] == "0.1" and dp[5].endswith("(client)") and dp[3].endswith("(1 seed)")


COMMITTED = sorted(p.parent for p in (REPO / "benchmarks" / "results").glob("*/results.csv"))


def test_committed_results_md_files_are_generated_from_their_csv():
    assert COMMITTED
    for folder in COMMITTED:
        md = (folder / "results.md").read_text()
        assert md == results_table(load_rows(folder)), folder
        assert "± 0.0000" not in md


@pytest.mark.parametrize(("doc", "blocks"), [("benchmarks/RESULTS.md", 5), ("README.md", 1)])
def test_committed_docs_match_the_committed_csvs(doc, blocks, capsys):
    path = REPO / doc
    text = path.read_text()
    assert text.count("<!-- fedkd-report:begin ") >= blocks
    assert splice(text, str(path), REPO)[0] == text
    assert main(["report", "--into", str(path), "--check"]) == 0, capsys.readouterr().err

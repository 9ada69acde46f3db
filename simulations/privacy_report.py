"""``fedkd privacy DIR``: the privacy table of a run, recomputed from its ledger."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkd.config import ConfigError

_HELP = """Recompute the ε a run spent from its ledger.json, per mechanism and scope.

For each row: the enforced accountant's ε (PLD, dp_accounting) and the RDP and PRV
cross-checks where they apply, δ, the neighbouring relation, σ, q, steps or queries,
rounds, the population, and for DP-SGD the client with the largest ε and the spread over
clients. A non-private run prints ε = ∞ (nothing was protected)."""


def privacy_table(run_dir: Path) -> list[dict]:
    """Rows of :func:`fedkd.privacy.accounting.report` for the run in ``run_dir``."""
    from fedkd.privacy.accounting import report
    from fedkd.privacy.checks import client_delta
    from fedkd.privacy.ledger import PrivacyLedger
    from fedkd.rundir import RunDir

    cfg = RunDir(run_dir).read_config()
    path = run_dir / "ledger.json"
    if not cfg.privacy.mechanisms:
        return []
    if not path.is_file():
        raise ConfigError(f"{path} not found: the run released nothing private yet")
    try:
        ledger = PrivacyLedger.load(path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return report(ledger, cfg.privacy.delta, client_delta(cfg))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _values(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def format_rows(rows: list[dict]) -> list[str]:
    """Plain-text lines of the table (one block per row)."""
    lines = []
    for r in rows:
        lines.append(f"{r['mechanism']} ({r['scope']} level, {r['relation']} neighbours)")
        lines.append(
            f"  ε = {r['eps']:.4f} by {r['accountant'].upper()} (enforced), "
            f"RDP {_fmt(r['eps_rdp'])}, PRV {_fmt(r['eps_prv'])}, δ = {r['delta']:g}"
        )
        what = "queries" if r["mechanism"].startswith("pate") else "steps"
        lines.append(
            f"  σ {_values(r['noise_multiplier'])}, q {_values(r['sample_rate'])}, "
            f"{r['steps']} {what}, {r['rounds']} rounds, population {r['population']}"
        )
        if r["threshold_checks"]:
            lines.append(f"  {r['threshold_checks']} threshold checks")
        if r["scope"] == "example":
            lines.append(
                f"  largest ε: {r['subject']} of {r['clients']} clients "
                f"(min {r['eps_min']:.4f}, median {r['eps_median']:.4f})"
            )
        if r["seeded"]:
            from fedkd.privacy.entropy import INSECURE_NOTE

            lines.append(f"  {INSECURE_NOTE}")
    return lines


def _cmd(args: argparse.Namespace) -> int:
    rows = privacy_table(Path(args.run_dir))
    sys.stdout.write(f"privacy spent in {args.run_dir} (recomputed from ledger.json)\n")
    if not rows:
        sys.stdout.write("no privacy mechanism: ε = ∞ (nothing in this run is protected)\n")
        return 0
    sys.stdout.write("\n".join(format_rows(rows)) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fedkd privacy``."""
    parser = subparsers.add_parser(
        "privacy",
        help="print the ε spent by a run, recomputed from its ledger",
        description=_HELP,
    )
    parser.add_argument("run_dir", metavar="DIR", help="a run directory (holds ledger.json)")
    parser.set_defaults(func=_cmd)

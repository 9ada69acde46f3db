"""``fedkd privacy DIR``: the privacy table of a run, recomputed from its ledger."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkd.config import ConfigError


def privacy_table(run_dir: Path) -> list[dict]:
    """Rows (mechanism, scope, subject, δ, ε by RDP and by PLD) for the run in ``run_dir``."""
    from fedkd.privacy.accounting import report
    from fedkd.privacy.checks import client_delta
    from fedkd.privacy.ledger import PrivacyLedger
    from fedkd.rundir import RunDir

    cfg = RunDir(run_dir).read_config()
    path = run_dir / "ledger.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: the run released nothing private yet")
    try:
        ledger = PrivacyLedger.load(path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return report(ledger, cfg.privacy.delta, client_delta(cfg))


def _cmd(args: argparse.Namespace) -> int:
    rows = privacy_table(Path(args.run_dir))
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"privacy spent in {args.run_dir} (from ledger.json)")
        for col in ("mechanism", "scope", "subject", "δ", "ε (RDP)", "ε (PLD)"):
            table.add_column(col, justify="right" if col.startswith(("δ", "ε")) else "left")
        for r in rows:
            table.add_row(
                r["mechanism"],
                r["scope"],
                r["subject"],
                f"{r['delta']:g}",
                f"{r['eps_rdp']:.4f}",
                f"{r['eps_pld']:.4f}",
            )
        Console().print(table)
    except ImportError:  # pragma: no cover - rich is a dependency
        for r in rows:
            sys.stdout.write(f"{r}\n")
    if not rows:
        sys.stdout.write("no private releases in this run\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fedkd privacy``."""
    parser = subparsers.add_parser(
        "privacy", help="print the ε spent by a run, recomputed from its ledger (RDP and PLD)"
    )
    parser.add_argument("run_dir", metavar="DIR")
    parser.set_defaults(func=_cmd)

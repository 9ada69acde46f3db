"""``fedkd report``: Markdown tables generated from sweeps' ``results.csv``, never typed.

``fedkd report DIR [DIR ...]`` prints the table of one or more sweeps (a sweep folder or a
``results.csv`` path each); ``--table headline`` pivots it to one row per method and
mechanism with a column per target ε; ``--out FILE`` writes it atomically.

``fedkd report --into FILE`` regenerates every marked block of a Markdown file::

    <!-- fedkd-report:begin digits table=headline source=benchmarks/results/digits/results.csv -->
    (generated: replaced on every run)
    <!-- fedkd-report:end digits -->

The begin line names the block and says what it holds: ``source=`` (required; one or
more paths, comma-separated, each a sweep folder or a ``results.csv``), ``table=``
(``results``, the default, or ``headline``) and, for a headline table, ``eps=`` (its
columns, e.g. ``1,2,4,8,inf``). Relative sources resolve against the repository holding
FILE (the nearest folder above it with ``.git`` or ``pyproject.toml``), so the same
markers work from any working directory. Text outside the blocks is kept byte for byte.
``--check`` writes nothing and exits 1 with one line naming the first stale block (or
FILE, with ``--out``) when the file differs from what would be written.

The accountant column: a row's ``accountant`` (and ``neighbouring``) column if
``results.csv`` has one; otherwise what the cell's own run folder (``DIR/<cell>/DONE`` and
its ``ledger.json``) recorded; otherwise ``not recorded``. Nothing is guessed: the
committed ``results.csv`` files predate both and their run folders are not committed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from fedkd.simulations.report_tables import (
    ACCOUNTING,
    NOT_RECORDED,
    TableError,
    headline_table,
    results_table,
)

from fedkd.atomic import write_text
from fedkd.config import ConfigError

RESULTS_CSV = "results.csv"
TABLES = ("results", "headline")
EXIT_STALE = 1
_REQUIRED = ("method", "mechanism", "target_epsilon", "status")
_BEGIN = re.compile(r"<!-- fedkd-report:begin (?P<name>[^\s=]+)(?P<opts>(?: [^\s=]+=\S+)*) -->")
_END = re.compile(r"<!-- fedkd-report:end (?P<name>[^\s=]+) -->")
_MARK = "fedkd-report:"
_NAMES = {"pld": "PLD", "rdp": "RDP", "prv": "PRV", "rdpaccountant": "Flower RDP"}
_RELATIONS = {
    "replace_one": "replace-one",
    "replace-one": "replace-one",
    "add_remove": "add/remove",
    "add-or-remove-one": "add/remove",
    "add_or_remove_one": "add/remove",
}


# --------------------------------------------------------------------------- reading


def _relation_label(text: str) -> str:
    found = {label for key, label in _RELATIONS.items() if key in text.lower()}
    return " + ".join(sorted(found))


def accountant_label(accountant: str, relation: str = "") -> str:
    """``PLD (replace-one)`` from ``pld`` and ``replace_one`` (or from ``pld (replace-one)``)."""
    words = re.findall(r"[A-Za-z]+", accountant)
    name = next((_NAMES[w.lower()] for w in words if w.lower() in _NAMES), accountant.strip())
    rel = _relation_label(relation) or _relation_label(accountant) or "relation not recorded"
    return f"{name} ({rel})"


def ledger_relations(path: Path) -> str:
    """The neighbouring relations a run's ``ledger.json`` records (``""`` if none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    releases = data.get("releases") if isinstance(data, dict) else None
    if not isinstance(releases, list):
        return ""
    return ",".join(sorted({str(r.get("relation", "")) for r in releases if isinstance(r, dict)}))


def recorded_accounting(row: dict[str, Any], run_dir: Path | None) -> str:
    """How a row's ε was accounted, as recorded (module docstring); else ``not recorded``."""
    if row.get("accountant"):
        return accountant_label(str(row["accountant"]), str(row.get("neighbouring") or ""))
    done = run_dir / "DONE" if run_dir is not None else None
    if done is None or not done.is_file():
        return NOT_RECORDED
    try:
        summary = json.loads(done.read_text())
    except ValueError:
        return NOT_RECORDED
    accountant = summary.get("accountant") or summary.get("accounting")
    if not accountant:
        return NOT_RECORDED
    return accountant_label(str(accountant), ledger_relations(run_dir / "ledger.json"))


def with_accounting(rows: list[dict[str, Any]], folder: Path | None) -> list[dict[str, Any]]:
    """Copies of ``rows`` with the ``accounting`` key :func:`recorded_accounting` gives."""
    out = []
    for row in rows:
        cell = str(row.get("cell") or "")
        run_dir = folder / cell if folder is not None and cell else None
        out.append({**row, ACCOUNTING: recorded_accounting(row, run_dir)})
    return out


def load_rows(source: str | Path) -> list[dict[str, Any]]:
    """The rows of one sweep's ``results.csv`` (``source``: its folder or the file).

    Raises
    ------
    ConfigError
        If there is no such file or it is not a sweep's ``results.csv``.
    """
    path = Path(source)
    csv_path = path / RESULTS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise ConfigError(f"report: no results.csv at {source}")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(_REQUIRED) - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"report: {csv_path} is not a sweep's results.csv: no {min(missing)}")
        rows = list(reader)
    return with_accounting(rows, csv_path.parent)


def render(
    rows: list[dict[str, Any]], table: str = "results", eps: list[float] | None = None
) -> str:
    """The Markdown ``table`` (``results`` or ``headline``) of ``rows``."""
    if table not in TABLES:
        raise ConfigError(f"report: table must be one of {', '.join(TABLES)}, got {table!r}")
    if eps is not None and table != "headline":
        raise ConfigError("report: eps (the headline's columns) needs table=headline")
    try:
        return results_table(rows) if table == "results" else headline_table(rows, eps)
    except TableError as err:
        raise ConfigError(f"report: {err}") from None


def parse_epsilons(text: str) -> list[float]:
    """``1,2,4,8,inf`` as floats (``inf`` or ``∞`` for infinity)."""
    try:
        values = [math.inf if v.strip() in ("inf", "∞") else float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"report: eps must be numbers joined by commas, got {text!r}") from None
    return values


# --------------------------------------------------------------------------- markers


def repo_root(path: Path) -> Path:
    """The nearest folder at or above ``path``'s folder with ``.git`` or ``pyproject.toml``."""
    start = path.resolve().parent
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or (folder / "pyproject.toml").exists():
            return folder
    return start


def _block_text(where: str, opts: str, root: Path) -> str:
    """The generated text of a block from its begin line's options."""
    found = dict(item.split("=", 1) for item in opts.split())
    unknown = set(found) - {"source", "table", "eps"}
    if unknown or "source" not in found:
        what = f"unknown option {min(unknown)}" if unknown else "no source="
        raise ConfigError(f"report: {where}: {what}")
    rows = [r for s in found["source"].split(",") for r in load_rows(root / s)]
    eps = parse_epsilons(found["eps"]) if "eps" in found else None
    return "\n" + render(rows, found.get("table", "results"), eps) + "\n"


def splice(text: str, where: str, root: Path) -> tuple[str, list[str]]:
    """``text`` with every marked block regenerated, and the names of blocks that changed.

    Parameters
    ----------
    text : str
        A Markdown file's content.
    where : str
        The file's name, for error messages.
    root : Path
        What relative ``source=`` paths resolve against.

    Raises
    ------
    ConfigError
        On a malformed, unclosed, nested, mismatched or duplicate marker.
    """
    out: list[str] = []
    changed: list[str] = []
    seen: set[str] = set()
    block: tuple[str, str, list[str]] | None = None  # name, generated, old lines
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        here = f"{where}:{number}"
        begin, end = _BEGIN.fullmatch(line.strip()), _END.fullmatch(line.strip())
        if _MARK in line and not (begin or end):
            raise ConfigError(f"report: {here}: malformed fedkd-report marker")
        if begin:
            name = begin["name"]
            if block is not None or name in seen:
                raise ConfigError(f"report: {here}: block {name} opens inside another or twice")
            seen.add(name)
            block = (name, _block_text(here, begin["opts"], root), [])
            out.append(line)
        elif end:
            if block is None or end["name"] != block[0]:
                raise ConfigError(f"report: {here}: end of {end['name']} without its begin")
            out.append(block[1])
            if "".join(block[2]) != block[1]:
                changed.append(block[0])
            block = None
            out.append(line)
        elif block is not None:
            block[2].append(line)
        else:
            out.append(line)
    if block is not None:
        raise ConfigError(f"report: {where}: block {block[0]} has no end marker")
    return "".join(out), changed


# --------------------------------------------------------------------------- CLI


def _stale(message: str) -> int:
    sys.stderr.write(f"fedkd report: {message}\n")
    return EXIT_STALE


def _cmd_report(args: argparse.Namespace) -> int:
    if bool(args.sources) == bool(args.into):
        raise ConfigError("report: give one or more sweep folders, or --into FILE (not both)")
    if args.into:
        if args.out or args.eps or args.table:
            raise ConfigError("report: --into takes no --out, --table or --eps (markers say)")
        target = Path(args.into)
        if not target.is_file():
            raise ConfigError(f"report: --into {target}: no such file")
        old = target.read_text(encoding="utf-8")
        new, changed = splice(old, str(target), repo_root(target))
        if args.check:
            if changed:
                hint = f"run fedkd report --into {target}"
                return _stale(f"{target}: block {changed[0]} is stale; {hint}")
            return 0
        if new != old:
            write_text(target, new)
        return 0
    rows = [r for s in args.sources for r in load_rows(s)]
    eps = parse_epsilons(args.eps) if args.eps else None
    text = render(rows, args.table or "results", eps)
    if args.check:
        if not args.out:
            raise ConfigError("report: --check needs --into FILE or --out FILE")
        out = Path(args.out)
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            return _stale(f"{out} is stale; run the same command without --check")
        return 0
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: Any) -> None:
    """Add ``fedkd report`` to the ``fedkd`` command line."""
    rep = subparsers.add_parser(
        "report",
        help="Markdown tables from sweeps' results.csv (print, --out, or --into marked blocks)",
    )
    rep.add_argument("sources", nargs="*", metavar="DIR", help="sweep folder or results.csv")
    rep.add_argument("--table", choices=TABLES, help="default: results")
    rep.add_argument("--eps", help="headline columns, e.g. 1,2,4,8,inf (default: the sweep's)")
    rep.add_argument("--out", help="write the table to FILE (atomically) instead of stdout")
    rep.add_argument("--into", metavar="FILE", help="regenerate the marked blocks of FILE")
    rep.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the file is stale"
    )
    rep.set_defaults(func=_cmd_report)


__all__ = ["load_rows", "register", "render", "splice", "with_accounting"]

"""The ``fedkd`` command line.

User mistakes (bad config key or value, missing data file, unusable run directory) print
one line naming the problem and exit with code 2, without a traceback. A run in which some
clients failed every round they were asked ends with its summary, one line naming them and
the first reason, and exit code 3.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedkd.config import Config

logger = logging.getLogger("fedkd.simulations.cli")

EXIT_USAGE = 2
#: Exit status of a run that finished while some clients failed every round they were asked.
EXIT_CLIENTS_FAILED = 3
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: What to run after Ctrl-C, by command: the work already written is kept.
_RESUME_HINT = {
    "sweep": "finished cells are kept: rerun the same command to resume",
    "tune": "finished runs are kept: rerun the same command to resume",
}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command that knows how to go on: ``hint`` says how."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def _simulate_interruptible(cfg: Config, out: Path, resume: bool) -> dict:
    """:func:`fedkd.simulations.runner.simulate`; Ctrl-C names the run directory to resume."""
    import shlex

    from fedkd.simulations.runner import simulate

    try:
        return simulate(cfg, out, resume=resume)
    except KeyboardInterrupt:
        if not (out / "config.yaml").exists():  # nothing written yet: nothing to resume
            raise
        raise Interrupted(
            "finished rounds are kept: continue with "
            f"`fedkd simulate --resume {shlex.quote(str(out))}`"
        ) from None


# Modules that add sub-commands: each has ``register(subparsers)``, which adds a parser
# whose ``func(args) -> int`` runs the command. User errors raise ConfigError (exit 2).
EXTENSIONS = (
    "fedkd.simulations.privacy_report",
    "fedkd.simulations.sweep",
    "fedkd.simulations.report",
    "fedkd.simulations.tune",
    "fedkd.client.deploy_cli",
    "fedkd.simulations.export_cli",
)
#: What ``fedkd --help`` says about itself: plain text, not the module's reST docstring.
DESCRIPTION = (
    "Federated knowledge distillation with differential privacy: run simulations and "
    "sweeps, report the privacy spent, deploy, export."
)
_VERBOSE_HELP = "show Flower and Ray logs"


def package_version() -> str:
    """The installed ``fedkd`` distribution's version, or ``unknown`` outside an install.

    Returns
    -------
    str
        E.g. ``0.1.0``.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedkd")
    except PackageNotFoundError:
        return "unknown"


def _add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` / ``--verbose`` after every (nested) sub-command too.

    The sub-command's flag has no default of its own (``SUPPRESS``), so a ``-v`` given
    before the sub-command is not reset by the sub-parser.
    """
    for action in parser._actions:  # argparse has no public walk of its sub-parsers
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
            try:
                child.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help=_VERBOSE_HELP,
                )
            except argparse.ArgumentError:  # that command uses -v itself
                logger.debug("fedkd %s keeps its own -v", child.prog)
            _add_verbose_everywhere(child)


def _setup_logging(verbose: bool) -> None:
    try:
        from rich.logging import RichHandler

        if not sys.stdout.isatty():
            raise ImportError  # piped or captured: plain lines, one per round, no wrapping
        handler: logging.Handler = RichHandler(show_path=False, show_time=False, markup=False)
        fmt = "%(message)s"
    except ImportError:
        handler, fmt = logging.StreamHandler(sys.stdout), "%(levelname)-8s %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("fedkd").setLevel(logging.INFO)  # fedkd.server, .client, .simulations too
    if not verbose:
        import flwr.common.logger  # noqa: F401 - Flower configures its logger on import

        flwr_logger = logging.getLogger("flwr")
        flwr_logger.setLevel(logging.WARNING)
        flwr_logger.propagate = False


def _summary_line(summary: dict, out: Path) -> str:
    """The one line ``fedkd simulate`` prints about a run's summary."""
    val = summary.get("final_val_accuracy")
    line = (
        f"final student accuracy {summary['student_accuracy']:.4f}"
        + (f" (validation {val:.4f})" if val is not None else "")
        + f" after {summary['rounds_completed']} rounds ({summary['seconds']:.1f} s); "
        f"results in {out}"
    )
    eps = {k: v for k, v in summary.items() if k in ("epsilon_example", "epsilon_client")}
    if eps:
        line += "; " + ", ".join(f"{k} {v:.3f}" for k, v in eps.items())
        line += f" ({summary.get('accountant', 'pld')}, replace-one)"
        if not summary.get("epsilon_guarantee", True):
            from fedkd.privacy.entropy import INSECURE_NOTE

            line += f"; {INSECURE_NOTE}"
    if summary.get("stopped"):
        line += f"; {summary['stopped']}"
    return line


def _report(summary: dict, out: Path) -> int:
    """Print a run's summary line; the exit status it stands for."""
    sys.stdout.write(_summary_line(summary, out) + "\n")
    failing = summary.get("failed_clients")
    if failing:
        from fedkd.server.runner import failed_clients_line

        sys.stderr.write(f"fedkd: error: {failed_clients_line(failing)}\n")
        return EXIT_CLIENTS_FAILED
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fedkd.simulations.preflight import preflight

    from fedkd.config import ConfigError, load_config
    from fedkd.rundir import RunDir, RunFinished, check_fresh

    if args.resume:
        if args.config or args.set or args.out:
            raise ConfigError(
                f"--resume continues {args.resume} with its saved config.yaml; drop CONFIG, "
                "--set and --out (to change the config, start a new run with --out DIR)"
            )
        run = RunDir(Path(args.resume))
        cfg = run.read_config()
        out = run.path
        if run.is_done():
            logger.warning("%s already finished; nothing to resume", out)
            return _report(run.read_done(), out)
    else:
        cfg = load_config(args.config, args.set)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        try:
            check_fresh(out, cfg)  # before the preflight: a rerun costs nothing
        except RunFinished as done:
            logger.warning("%s", done)
            return _report(done.summary, out)
    preflight(cfg)  # nothing is written before it passes
    return _report(_simulate_interruptible(cfg, out, bool(args.resume)), out)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fedkd``."""
    parser = argparse.ArgumentParser(prog="fedkd", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run a federated-distillation simulation")
    sim.add_argument("config", nargs="?", help="YAML config (not needed with --resume)")
    sim.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set distill.codec=int8 (repeatable)",
    )
    sim.add_argument("--out", help="run directory (default: runs/<config name>)")
    sim.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    sim.set_defaults(func=_cmd_simulate)
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command is not part of this checkout
                continue
            raise
        module.register(sub)
    _add_verbose_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedkd`` console script."""
    from fedkd.config import ConfigError
    from fedkd.data import DataError
    from fedkd.models import ModelError
    from fedkd.rundir import RunDirError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "simulate" and not args.config and not args.resume:
        parser.error("simulate needs a CONFIG or --resume DIR")
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError, ModelError, RunDirError) as err:
        sys.stderr.write(f"fedkd: error: {err}\n")
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        hint = err.hint if isinstance(err, Interrupted) else _RESUME_HINT.get(args.command)
        sys.stderr.write(f"fedkd: interrupted; {hint}\n" if hint else "fedkd: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

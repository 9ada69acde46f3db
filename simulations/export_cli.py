"""``fedkd export RUN``: the trained student as TorchScript and ONNX, with a model card."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedkd.config import ConfigError


def _cmd(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    try:
        from fedkd.modelcard import export_run, render_markdown

        card = export_run(Path(args.run_dir), args.out, repeats=args.repeats)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in {"onnx", "onnxscript", "onnxruntime"}:
            raise ConfigError(
                f"fedkd export needs {err.name}: pip install 'fedkd[export]'"
            ) from err
        raise
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    sys.stdout.write(render_markdown(card))
    sys.stdout.write(f"\nfiles and model_card.json / model_card.md in {out}\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fedkd export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a finished run's student to TorchScript and ONNX (fp32, int8) "
        "with a model card (size, CPU latency, accuracy)",
    )
    parser.add_argument("run_dir", metavar="RUN")
    parser.add_argument("--out", help="output folder (default: RUN/export)")
    parser.add_argument(
        "--repeats", type=int, default=50, help="timed runs per latency figure (median)"
    )
    parser.set_defaults(func=_cmd)

"""The README's sample output is what the quickstart prints (timings aside)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROUND = re.compile(
    r"round (\d+)/20  student acc ([\d.]+)  teacher acc ([\d.]+)  "
    r"up (\d+) B  down (\d+) B  clients (\d+)"
)
FINAL = re.compile(r"final student accuracy ([\d.]+) after (\d+) rounds")


def _sample() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("## What you see", 1)[1].split("```", 2)[1]
    return block


def _parse(text: str) -> tuple[dict[int, tuple], tuple]:
    rounds = {int(m.group(1)): m.groups()[1:] for m in ROUND.finditer(text)}
    return rounds, FINAL.search(text).groups()


@pytest.mark.slow
def test_the_readme_sample_output_matches_the_quickstart(tmp_path):
    # The README runs the quickstart on Ray into runs/quickstart; the in-process grid gives
    # the same model. Only the run config's backend name (sent down each round) differs,
    # so bytes down are compared to within that.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedkd.simulations.cli",
            "simulate",
            str(ROOT / "simulations" / "configs" / "quickstart.yaml"),
            "--out",
            "runs/quickstart",
            "--set",
            "runtime.backend=inprocess",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    sample_rounds, sample_final = _parse(_sample())
    got_rounds, got_final = _parse(out)
    assert sorted(sample_rounds) == [1, 20] and got_final == sample_final
    for rnd, (acc, teacher, up, down, clients) in sample_rounds.items():
        g_acc, g_teacher, g_up, g_down, g_clients = got_rounds[rnd]
        assert (g_acc, g_teacher, g_up, g_clients) == (acc, teacher, up, clients)
        assert abs(int(g_down) - int(down)) <= 10 * (len("inprocess") - len("ray")) * 4

"""The wheel installs one top-level package, ``fedkd``, with every source package inside it.

The repository keeps the folders ``server/``, ``client/`` and ``simulations/`` (Flower's app
components load them from the app directory); ``pyproject.toml`` installs them as
``fedkd.server``, ``fedkd.client`` and ``fedkd.simulations``, so installing fedkd cannot
shadow, or be shadowed by, another project's ``server`` or ``client``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"fedkd": "fedkd", "server": "fedkd.server", "client": "fedkd.client"}
FOLDERS["simulations"] = "fedkd.simulations"


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Installed name of every folder of the four trees that holds an ``__init__.py``."""
    names = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if folder == "fedkd" and rel and rel[0] in FOLDERS:
                continue
            names.add(".".join([package, *rel]))
    return names


def test_every_source_package_is_listed_and_mapped_to_its_folder() -> None:
    setuptools = _setuptools()
    assert set(setuptools["packages"]) == _source_packages()
    assert setuptools["package-dir"] == {p: f for f, p in FOLDERS.items()}


@pytest.mark.slow
def test_the_wheel_has_one_top_level_package_and_the_bundled_configs(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools writes build/ beside the sources it builds
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("fedkd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fedkd"}
    assert "fedkd/server/app.py" in names and "fedkd/client/app.py" in names
    assert "fedkd/simulations/configs/quickstart.yaml" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fedkd = fedkd.simulations.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

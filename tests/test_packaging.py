"""The configs ship inside the package: ``python -m build``'s path (an sdist, then a wheel built
from it) keeps every yaml, and an installed wheel, far from the source tree, finds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "paralab" / "configs"


def _build(backend_call: str, source: Path, out: Path) -> Path:
    """One PEP 517 build with the installed setuptools (no network, no isolation)."""
    out.mkdir(exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.{backend_call}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """sdist from a copy of the tree (the checkout stays untouched), then a wheel from the sdist."""
    tmp = tmp_path_factory.mktemp("packaging")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree)
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    sdist = _build("build_sdist", tree, tmp / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    return _build("build_wheel", unpacked, tmp / "wheel")


def test_the_wheel_holds_every_config(wheel):
    expected = {f"paralab/configs/{p.relative_to(CONFIGS)}" for p in CONFIGS.rglob("*.yaml")}
    assert "paralab/configs/config.yaml" in expected
    assert "paralab/configs/experiment/quickstart_offline.yaml" in expected
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {n for n in names if n.startswith("paralab/configs/") and n.endswith(".yaml")} == (
        expected
    )


def test_an_installed_wheel_finds_its_configs(wheel, tmp_path):
    """Unpacked wheel = installed pure-Python package; run from elsewhere, ahead of the checkout."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PARALAB_CONFIG_DIR", None)

    def paralab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "paralab", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    where = subprocess.run([sys.executable, "-c", "import paralab; print(paralab.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert where.stdout.startswith(str(site)), where
    listed = paralab("list", "experiments")
    assert listed.returncode == 0, listed.stderr
    assert "quickstart_offline" in listed.stdout and "quickstart_federated" in listed.stdout
    config = paralab("run", "quickstart_offline", "--print-config")
    assert config.returncode == 0, config.stderr
    assert "name: quickstart-offline" in config.stdout

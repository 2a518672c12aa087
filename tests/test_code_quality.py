"""The code stays linted, formatted and type-checked (ruff and mypy, configured in pyproject.toml):
CI runs these with the rest of the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists() and shutil.which(name) is None:
        pytest.fail(f"{name} is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return str(path if path.exists() else shutil.which(name))


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    done = run(tool("ruff"), "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_code_is_formatted():
    done = run(tool("ruff"), "format", "--no-cache", "--check", ".")
    assert done.returncode == 0, f"run `ruff format .`:\n{done.stdout}{done.stderr}"


@pytest.mark.slow
def test_mypy_finds_nothing():
    done = run(tool("mypy"), "--cache-dir", "/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_package_folder_is_installed_under_one_import_name():
    """pyproject lists the packages by hand (the repository root is the package `imgdedup_pipeline`):
    a new folder left out would import in the checkout but be missing from the wheel."""
    import tomllib

    listed = set(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        "imgdedup_pipeline." + ".".join(init.parent.relative_to(PROJECT_ROOT).parts)
        for top in ("assets", "automation", "checks", "core", "resources")
        for init in (PROJECT_ROOT / top).rglob("__init__.py")
    }
    assert listed == folders | {"imgdedup_pipeline"}


def test_the_installed_package_is_this_checkout():
    from imgdedup_pipeline import cli, definitions

    assert Path(cli.__file__).resolve() == PROJECT_ROOT / "cli.py"
    assert Path(definitions.__file__).resolve() == PROJECT_ROOT / "definitions.py"

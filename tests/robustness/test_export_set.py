"""The exports of a run are one set (issue 13, items 8 and 10): a reader never sees files of two
runs mixed, even after a kill between two of them; exports get the usual permissions; the summary
never says a file is from an earlier run when no earlier run wrote it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from robustness_support import PROJECT_ROOT, RUN_FLAGS, cli_env, run_cli
from synthetic_images import write_photo_tiles

from imgdedup_pipeline.core.export_set import published_run_id
from imgdedup_pipeline.core.output_folder import claim_output_folder

EXPORTS = (
    "uniqueness.csv",
    "uniqueness.parquet",
    "duplicates.csv",
    "clean.csv",
    "clean.parquet",
    "rejected.csv",
    "training_manifest.csv",
    "report.html",
)


def run_driver(*args, dagster_home: Path, **extra_env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(PROJECT_ROOT / "tests" / "robustness" / "cli_driver.py"), *map(str, args)]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=cli_env(dagster_home, **extra_env), capture_output=True, text=True, timeout=300
    )


def read_set(out: Path) -> dict[str, set[str]]:
    return {
        name: set(pd.read_csv(out / name, keep_default_na=False)["path"])
        for name in ("uniqueness.csv", "clean.csv", "duplicates.csv", "rejected.csv")
    }


def assert_one_run(exports: dict[str, set[str]]) -> None:
    """Every scored image is in exactly one of clean and duplicates, and nothing else is."""
    clean, duplicates = exports["clean.csv"], exports["duplicates.csv"]
    assert not clean & duplicates, f"in both: {sorted(clean & duplicates)}"
    assert clean | duplicates == exports["uniqueness.csv"], (
        f"mixed: {sorted((clean | duplicates) ^ exports['uniqueness.csv'])}"
    )


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """Run 1 on 6 tiles (umask 022); then a tile deleted and a copy of another added, and run 2 is
    SIGKILLed between writing duplicates.csv and clean.csv; then run 3 finishes."""
    base = tmp_path_factory.mktemp("export-set")
    images, out, home = base / "images", base / "out", base / "home"
    tiles = write_photo_tiles(images, 6)
    previous_umask = os.umask(0o022)
    try:
        first = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=home)
    finally:
        os.umask(previous_umask)
    assert first.returncode == 0, first.stderr[-3000:]
    first_set = read_set(out)
    first_modes = {name: stat.S_IMODE((out / name).stat().st_mode) for name in EXPORTS}
    tiles[0].unlink()
    shutil.copy(tiles[1], images / "copy-of-tile.png")
    killed = run_driver(
        "run",
        "--images",
        images,
        "--out",
        out,
        *RUN_FLAGS,
        dagster_home=home,
        IMGDEDUP_TEST_KILL_AT="before_clean_export",
    )
    after_kill = read_set(out)
    third = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=home)
    return {
        "out": out,
        "first": first,
        "first_set": first_set,
        "first_modes": first_modes,
        "killed": killed,
        "after_kill": after_kill,
        "third": third,
        "images": images,
    }


def test_the_second_run_was_killed(night):
    assert night["killed"].returncode == -9, night["killed"].stderr[-2000:]


def test_after_the_kill_readers_see_the_last_complete_set(night):
    assert_one_run(night["after_kill"])
    assert night["after_kill"] == night["first_set"]


def test_the_next_run_publishes_its_own_complete_set(night):
    assert night["third"].returncode == 0, night["third"].stderr[-3000:]
    exports = read_set(night["out"])
    assert_one_run(exports)
    assert "copy-of-tile.png" in exports["uniqueness.csv"] and len(exports["uniqueness.csv"]) == 6
    run_id = published_run_id(night["out"])
    assert run_id is not None and f"dagster run {run_id}" in night["third"].stdout
    manifest = json.loads((night["out"] / "exports" / run_id / "manifest.json").read_text())
    assert manifest["run_id"] == run_id and set(EXPORTS) <= set(manifest["files"])


def test_only_the_current_and_the_previous_published_sets_are_kept(night):
    """Run 1's and run 3's sets; the killed run's unpublished set stays until it is a day old (a run
    still writing its set looks the same: tests/core/test_publishing_exports.py)."""
    folders = [p for p in (night["out"] / "exports").iterdir() if not p.is_symlink()]
    published = [p.name for p in folders if (p / "manifest.json").exists()]
    assert len(published) == 2 and published_run_id(night["out"]) in published
    assert len(folders) == 3


def test_exports_get_the_usual_permissions(night):
    assert night["first_modes"] == {name: 0o644 for name in EXPORTS}  # run 1 ran with umask 022


def test_a_failed_first_run_claims_no_file_is_from_an_earlier_run(tmp_path):
    """A write that fails mid-set (as on a full disk; here a folder where report.html goes) on an
    output folder that no run wrote before."""
    images = tmp_path / "images"
    tiles = write_photo_tiles(images, 4)
    shutil.copy(tiles[0], images / "copy.png")  # a group, so that there is a report to write
    out = tmp_path / "out"
    claim_output_folder(out)
    (out / "report.html").mkdir()
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=tmp_path / "home")
    assert completed.returncode == 1, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "from an earlier run" not in completed.stdout and "from the earlier run" not in completed.stdout
    for name in ("uniqueness.csv", "duplicates.csv", "clean.csv"):
        assert f"{out / name}" not in completed.stdout

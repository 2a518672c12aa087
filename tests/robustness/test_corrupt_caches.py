"""Every cache under OUT/state is disposable (issue 13, item 4): a damaged one is named in the run's
log, discarded and computed again, and the results equal those of a run that never had it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from robustness_support import RUN_FLAGS, run_cli
from synthetic_images import write_photo_tiles


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("caches")
    images, out = base / "images", base / "out"
    write_photo_tiles(images, 8)
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=base / "home")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return images, out, base / "home"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def neighbor_searches(out: Path) -> list[Path]:
    return sorted((out / "state" / "neighbor-searches").glob("*.npz"))


def catalogs(out: Path) -> list[Path]:
    return sorted((out / "state").glob("catalog-*.parquet"))


def garbage_checkpoint(out: Path) -> list[Path]:
    (table,) = [p.stem for p in (out / "state" / "lancedb").glob("*.lance")]
    shard = out / "state" / "embedding-checkpoints" / table / "batch-0000garbage.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_bytes(b"PAR1 this is no parquet file at all PAR1")
    return [shard]


def check_tables(out: Path) -> list[Path]:
    return sorted((out / "state" / "check-tables").glob("*.parquet"))


def figures(out: Path) -> list[Path]:
    return sorted((out / "state" / "figures").glob("*.png"))


@pytest.mark.parametrize("damage", ["neighbor_search", "catalog", "checkpoint", "check_table", "histogram"])
def test_a_damaged_cache_is_named_discarded_and_recomputed(first_run, tmp_path, damage):
    images, first_out, home = first_run
    out = tmp_path / "out"
    shutil.copytree(first_out, out, symlinks=True)
    if damage == "neighbor_search":
        damaged = neighbor_searches(out)
        for path in damaged:
            truncate(path)
    elif damage == "catalog":
        damaged = catalogs(out)
        for path in damaged:
            truncate(path)
    elif damage in ("check_table", "histogram"):
        damaged = check_tables(out) if damage == "check_table" else figures(out)
        for path in damaged:
            truncate(path)
    else:
        damaged = garbage_checkpoint(out)
    assert damaged
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=home)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    for path in damaged:
        assert f"discarded the unreadable cache {path}" in completed.stderr
    for name in ("uniqueness.csv", "clean.csv", "duplicates.csv"):
        assert pd.read_csv(out / name).equals(pd.read_csv(first_out / name)), name
    assert (out / "uniqueness_histogram.png").read_bytes() == (first_out / "uniqueness_histogram.png").read_bytes()
    if damage != "checkpoint":  # rewritten whole by the rerun
        for path in damaged:
            assert path.is_file()


def test_a_damaged_vector_table_fails_naming_the_file_and_the_fix(first_run, tmp_path):
    """The vector table is not a cache: it is never silently rebuilt, and the message says what to do."""
    images, first_out, home = first_run
    out = tmp_path / "out"
    shutil.copytree(first_out, out, symlinks=True)
    (table,) = (out / "state" / "lancedb").glob("*.lance")
    for data_file in (table / "data").glob("*.lance"):
        truncate(data_file)
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=home)
    assert completed.returncode == 1
    assert f"the vector table {table} cannot be read" in completed.stdout + completed.stderr
    assert f"move {table} aside" in completed.stdout + completed.stderr

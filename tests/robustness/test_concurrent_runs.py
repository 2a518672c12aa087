"""Two `imgdedup run`s started at the same moment against one LanceDB table, in one Dagster
instance whose dagster.yaml (the repo's) gives the `lancedb_writer` pool one slot: their writes
take turns, and the table ends with every vector exactly once.

Both runs go through `cli_driver.py`, which makes the first writer wait inside the write until the
second run is ready to write too: without the pool the two merge_inserts would then certainly
overlap, and LanceDB would insert the keys they share twice (README, "Concurrent runs").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from robustness_support import PROJECT_ROOT, RUN_FLAGS, cli_env, vector_rows

DRIVER = Path(__file__).with_name("cli_driver.py")


def copy_subset(files: list[Path], source: Path, target: Path) -> Path:
    for file in files:
        destination = target / file.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
    return target


def write_intervals(log: Path) -> dict[int, tuple[float, float]]:
    events: dict[int, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        pid, event, at = line.split()
        events.setdefault(int(pid), {})[event] = float(at)
    return {pid: (e["enter"], e["exit"]) for pid, e in events.items()}


@pytest.fixture(scope="module")
def two_runs(photo_tiles, tmp_path_factory):
    base = tmp_path_factory.mktemp("concurrent")
    files = sorted(photo_tiles.rglob("*.png"))
    overlap = len(files) // 5
    half = (len(files) + overlap) // 2
    folders = {
        "a": copy_subset(files[:half], photo_tiles, base / "images-a"),
        "b": copy_subset(files[-half:], photo_tiles, base / "images-b"),  # shares `overlap` files with a
    }
    home, uri, log = base / "dagster_home", base / "shared-lancedb", base / "writes.log"
    env = cli_env(home, IMGDEDUP_TEST_WRITE_LOG=str(log), IMGDEDUP_TEST_RENDEZVOUS=str(base / "rendezvous"))
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(DRIVER),
                "run",
                "--images",
                str(folder),
                "--out",
                str(base / f"out-{name}"),
                "--lancedb-uri",
                str(uri),
                *RUN_FLAGS,
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, folder in folders.items()
    }
    outputs = {name: process.communicate(timeout=400)[0] for name, process in processes.items()}
    codes = {name: process.returncode for name, process in processes.items()}
    catalogs = {
        name: pd.read_parquet(next((base / f"out-{name}" / "state").glob("catalog-*.parquet"))) for name in folders
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            pools = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
            inserted = [
                record.event_log_entry.asset_materialization.metadata["inserted_this_run"].value
                for record in instance.fetch_materializations(dg.AssetKey("image_vectors"), limit=10).records
            ]
    return {
        "codes": codes,
        "outputs": outputs,
        "catalogs": catalogs,
        "rows": vector_rows(uri),
        "intervals": write_intervals(log),
        "pools": pools,
        "inserted": inserted,
        "overlap": overlap,
    }


def test_both_runs_succeed(two_runs):
    for name, code in two_runs["codes"].items():
        assert code == 0, f"run {name}:\n{two_runs['outputs'][name][-3000:]}"


def test_the_table_holds_every_content_exactly_once(two_runs):
    catalogs, rows = two_runs["catalogs"], two_runs["rows"]
    shared = set(catalogs["a"]["pixel_hash"]) & set(catalogs["b"]["pixel_hash"])
    assert len(shared) == two_runs["overlap"]  # the runs really competed for the same keys
    expected = set(catalogs["a"]["pixel_hash"]) | set(catalogs["b"]["pixel_hash"])
    assert len(rows) == rows["pixel_hash"].nunique() == len(expected)  # no duplicate, no lost row
    assert set(rows["pixel_hash"]) == expected
    vectors = np.stack(rows["vector"].to_numpy())
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(two_runs["inserted"]) == 2 and sum(two_runs["inserted"]) == len(
        expected
    )  # the second writer skipped the shared keys


def test_the_pool_made_the_writes_take_turns(two_runs):
    assert two_runs["pools"].get("lancedb_writer") == 1
    intervals = sorted(two_runs["intervals"].values())
    assert len(intervals) == 2, "both runs should have written"
    (_, first_end), (second_start, _) = intervals
    assert first_end <= second_start, f"the two writes overlapped: {intervals}"


@pytest.mark.parametrize(
    "config, warns",
    [(None, False), ("telemetry:\n  enabled: false\n", True)],
    ids=["repo_dagster_yaml", "no_pool_limit"],
)
def test_cli_warns_when_the_instance_does_not_serialize_writers(tmp_path, monkeypatch, capsys, config, warns):
    from imgdedup_pipeline import cli

    home = tmp_path / "home"
    home.mkdir()
    if config:
        (home / "dagster.yaml").write_text(config)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with cli.open_instance() as instance:
        assert cli.warn_if_writes_are_not_serialized(instance) is warns
    assert ("lancedb_writer" in capsys.readouterr().err) is warns

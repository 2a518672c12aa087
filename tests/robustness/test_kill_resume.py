"""Crash and resume: `imgdedup run` is SIGKILLed in the middle of embedding, then on entering the
vector-table write, then right after the write committed; each rerun picks up where the last one
died, and the final results equal an uninterrupted run's.

One night of crashes, in one output folder and one Dagster instance:
  1. the real CLI, killed from outside once at least two embedding batches are checkpointed;
  2. the CLI (through `cli_driver.py`), killed on entering `LanceDBResource.insert_missing`;
  3. the same, killed right after the merge_insert committed, before the checkpoints are cleared;
  4. the real CLI again, to the end.
Runs 2 and 3 die inside `image_vectors`, which holds the `lancedb_writer` pool slot: runs 3 and 4
can only start writing because the CLI releases the slot of a run whose process is gone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from robustness_support import PROJECT_ROOT, RUN_FLAGS, cli_command, cli_env, run_cli, vector_rows

from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions

DRIVER = Path(__file__).with_name("cli_driver.py")
RUN_TIMEOUT_S = 300


def checkpoint_hashes(out: Path) -> set[str]:
    folders = list((out / "state" / "embedding-checkpoints").glob("*"))
    return {h for folder in folders for h in EmbeddingCheckpoint(folder).load()}


def shard_count(out: Path) -> int:
    return len(list((out / "state" / "embedding-checkpoints").glob("*/batch-*.parquet")))


def kill_when_checkpointed(args: list, dagster_home: Path, out: Path, min_shards: int = 2) -> subprocess.Popen:
    """Start the real CLI and SIGKILL it as soon as `min_shards` batches are on disk."""
    process = subprocess.Popen(
        cli_command(*args),
        cwd=PROJECT_ROOT,
        env=cli_env(dagster_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while shard_count(out) < min_shards:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"the run ended (rc={process.returncode}) before {min_shards} batches were checkpointed:\n{process.stdout.read()[-3000:]}"
            )
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()
    return process


def driver_run(*args, dagster_home: Path, kill_at: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DRIVER), *map(str, args)],
        cwd=PROJECT_ROOT,
        env=cli_env(dagster_home, IMGDEDUP_TEST_KILL_AT=kill_at),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def instance_facts(dagster_home: Path) -> dict:
    """Per run id: status, and the metadata of its image_embeddings / image_vectors materializations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        with dg.DagsterInstance.get() as instance:
            facts = {
                run.run_id: {"status": run.status, "start": instance.get_run_record_by_id(run.run_id).start_time}
                for run in instance.get_runs()
            }
            for asset in ("image_embeddings", "image_vectors"):
                for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
                    metadata = record.event_log_entry.asset_materialization.metadata
                    facts[record.run_id][asset] = {k: getattr(v, "value", v) for k, v in metadata.items()}
    return facts


@pytest.fixture(scope="module")
def crash_night(photo_tiles, tmp_path_factory):
    """The four runs above, with what was on disk and in the instance after each."""
    base = tmp_path_factory.mktemp("crash")
    out, home = base / "out", base / "dagster_home"
    args = ["run", "--images", photo_tiles, "--out", out, *RUN_FLAGS]
    stages = {}

    killed = kill_when_checkpointed(args, home, out)
    stages["killed_embedding"] = {"rc": killed.returncode, "hashes": checkpoint_hashes(out), "shards": shard_count(out)}

    for kill_at in ("before_merge", "after_merge"):
        completed = driver_run(*args, dagster_home=home, kill_at=kill_at)
        lancedb_dir = out / "state" / "lancedb"
        rows = (
            vector_rows(lancedb_dir)
            if lancedb_dir.exists() and any(lancedb_dir.iterdir())
            else pd.DataFrame(columns=["pixel_hash"])
        )
        stages[f"killed_{kill_at}"] = {
            "rc": completed.returncode,
            "output": completed.stdout + completed.stderr,
            "hashes": checkpoint_hashes(out),
            "rows": rows,
        }

    final = run_cli(*args, dagster_home=home, timeout=RUN_TIMEOUT_S)
    stages["final"] = {
        "rc": final.returncode,
        "output": final.stdout + final.stderr,
        "hashes": checkpoint_hashes(out),
        "rows": vector_rows(out / "state" / "lancedb"),
    }
    facts = instance_facts(home)
    runs = sorted(facts.values(), key=lambda run: run["start"])
    catalog = pd.read_parquet(next((out / "state").glob("catalog-*.parquet")))
    n_contents = catalog["pixel_hash"].nunique()  # what gets embedded: one vector per content
    assert n_contents == len(catalog) == len(list(photo_tiles.rglob("*.png")))  # every tile differs
    return {"out": out, "n_images": n_contents, "stages": stages, "runs": runs}


@pytest.fixture(scope="module")
def uninterrupted_out(photo_tiles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    settings = Settings(
        image_root=str(photo_tiles), out_dir=str(out), embedder="offline", batch_size=4, max_duplicate_fraction=1.0
    )
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    assert result.success
    return out


def test_kill_during_embedding_keeps_finished_batches_and_does_not_embed_them_again(crash_night):
    stages, runs, n = crash_night["stages"], crash_night["runs"], crash_night["n_images"]
    killed = stages["killed_embedding"]
    assert killed["rc"] == -signal.SIGKILL
    assert killed["shards"] >= 2
    assert 8 <= len(killed["hashes"]) < n, "the kill must land after two batches of 4 and before the last one"
    resumed = runs[1]["image_embeddings"]  # run 2 finished embedding before it died in the write
    assert resumed["embedded_this_run"] == n - len(killed["hashes"])
    assert resumed["dagster/row_count"] == n
    assert stages["killed_before_merge"]["hashes"] == stages["killed_after_merge"]["hashes"]
    assert len(stages["killed_before_merge"]["hashes"]) == n


def test_kill_on_entering_the_vector_write_leaves_the_table_untouched(crash_night):
    stage = crash_night["stages"]["killed_before_merge"]
    assert stage["rc"] == -signal.SIGKILL, stage["output"][-3000:]
    assert len(stage["rows"]) == 0


def test_kill_right_after_the_vector_write_leaves_each_vector_once(crash_night):
    stages, runs, n = crash_night["stages"], crash_night["runs"], crash_night["n_images"]
    stage = stages["killed_after_merge"]
    assert stage["rc"] == -signal.SIGKILL, stage["output"][-3000:]
    assert len(stage["rows"]) == stage["rows"]["pixel_hash"].nunique() == n
    assert len(stage["hashes"]) == n  # killed before the checkpoints were cleared
    assert runs[2]["image_embeddings"]["embedded_this_run"] == 0  # everything came from checkpoints


def test_final_run_embeds_and_inserts_nothing_and_cleans_up(crash_night):
    stages, runs, n = crash_night["stages"], crash_night["runs"], crash_night["n_images"]
    final = stages["final"]
    assert final["rc"] == 0, final["output"][-3000:]
    assert len(final["rows"]) == final["rows"]["pixel_hash"].nunique() == n
    norms = np.linalg.norm(np.stack(final["rows"]["vector"].to_numpy()), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert runs[3]["image_embeddings"]["embedded_this_run"] == 0
    assert runs[3]["image_embeddings"]["reused_from_vector_table"] == n
    assert runs[3]["image_vectors"]["inserted_this_run"] == 0
    assert final["hashes"] == set()  # checkpoints cleared once the vectors were durable
    statuses = [run["status"] for run in runs]
    assert statuses == [dg.DagsterRunStatus.FAILURE] * 3 + [dg.DagsterRunStatus.SUCCESS]


def test_final_results_equal_an_uninterrupted_run(crash_night, uninterrupted_out):
    crashed = pd.read_csv(crash_night["out"] / "uniqueness.csv", keep_default_na=False).sort_values(
        "path", ignore_index=True
    )
    reference = pd.read_csv(uninterrupted_out / "uniqueness.csv", keep_default_na=False).sort_values(
        "path", ignore_index=True
    )
    assert len(crashed) == crash_night["n_images"]
    assert crashed["path"].tolist() == reference["path"].tolist()
    np.testing.assert_allclose(crashed["uniqueness"], reference["uniqueness"], atol=1e-6, rtol=0)
    for column in ("label", "group_id", "duplicate_of"):
        assert crashed[column].tolist() == reference[column].tolist(), column


def test_process_tokens_tell_dead_and_reused_pids_from_live_ones():
    import socket

    from imgdedup_pipeline import cli

    sleeper = subprocess.Popen(["sleep", "30"])
    token = cli.process_token(sleeper.pid)
    assert token.startswith(f"{socket.gethostname()}:{sleeper.pid}:")
    assert not cli.process_is_gone(token)
    sleeper.kill()
    sleeper.wait()
    assert cli.process_is_gone(token)

    own = cli.process_token()
    assert not cli.process_is_gone(own)
    if own.rsplit(":", 1)[1]:  # with /proc: the same pid started at another time is another process
        assert cli.process_is_gone(own.rsplit(":", 1)[0] + ":1")
    assert not cli.process_is_gone(f"another-host:{sleeper.pid}:1")  # nothing here can tell

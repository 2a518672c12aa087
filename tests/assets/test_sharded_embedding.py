"""Sharded embedding: the 16 partitions of `sharded_embedding_job`, two of them as concurrent
`dagster asset materialize` processes, then `dedup_job`, give the same vector table and the same
exports as one unsharded `dedup_job` on the same folder."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from imgdedup_pipeline.assets.raw_images import discover_raw_images
from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
from imgdedup_pipeline.core.sample import build_sample_set
from imgdedup_pipeline.core.settings import ENV_PREFIX, Settings
from imgdedup_pipeline.core.sharding import SHARD_KEYS, in_shard, shard_of
from imgdedup_pipeline.definitions import (
    DEDUP_JOB,
    SHARDED_EMBEDDING_JOB,
    build_definitions,
    model_id_for,
    resources_for,
)
from imgdedup_pipeline.resources.lancedb import LanceDBResource, table_name_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARD_PROCESS_TIMEOUT_S = 300


def materialization_metadata(result, asset_name: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset_name]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def failures(result) -> list[str]:
    """What failed in a run: step errors and failed checks, for assertion messages."""
    steps = [
        f"{e.step_key}: {e.step_failure_data.error.message.strip()[:1000]}"
        for e in result.get_step_failure_events()
        if e.step_failure_data.error
    ]
    return steps + [f"check {c.check_name} failed" for c in result.get_asset_check_evaluations() if not c.passed]


def checkpoint_dir(settings: Settings) -> Path:
    return Path(settings.out_dir) / "state" / "embedding-checkpoints" / table_name_for(model_id_for(settings))


def checkpoint_files(settings: Settings) -> dict[str, list[str]]:
    """Checkpoint file name -> the pixel hashes it holds; every file must read as complete Parquet."""
    return {
        path.name: pq.read_table(path).column("pixel_hash").to_pylist()
        for path in EmbeddingCheckpoint(checkpoint_dir(settings)).shards()
    }


def distinct_hashes(settings: Settings) -> set[str]:
    (catalog,) = (Path(settings.out_dir) / "state").glob("catalog-*.parquet")
    return set(pd.read_parquet(catalog)["pixel_hash"])


def vector_table(settings: Settings) -> pd.DataFrame:
    table = LanceDBResource(uri=settings.vector_store_uri).open_vectors(model_id_for(settings)).to_arrow()
    frame = table.to_pandas()
    frame["vector"] = [np.asarray(v, np.float32) for v in frame["vector"]]
    return frame.set_index("pixel_hash").sort_index()


def materialize_shards_in_processes(
    settings: Settings, shards: list[str], dagster_home: Path
) -> list[subprocess.CompletedProcess]:
    """`dagster asset materialize ... --partition K` for each shard, all started at once."""
    # The processes read `definitions.py`'s settings from the environment: every field of these.
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        {
            ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name))
            for f in dataclasses.fields(settings)
            if getattr(settings, f.name) is not None
        }
    )
    assert Settings.from_env(env) == settings
    env["DAGSTER_HOME"] = str(dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    # Create the SQLite instance first: two processes creating it at once race on its schema.
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "asset",
                "materialize",
                "-f",
                "definitions.py",
                "--select",
                "image_embedding_shards",
                "--partition",
                shard,
                # The step in the command's own process: one Python start-up (torch import) per shard, not two.
                "--config-json",
                json.dumps({"execution": {"config": {"in_process": {}}}}),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for shard in shards
    ]
    finished = []
    for process in processes:
        output, _ = process.communicate(timeout=SHARD_PROCESS_TIMEOUT_S)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, output))
    return finished


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same folder deduplicated twice: sharded (into `sharded/`) and unsharded (into `unsharded/`)."""
    base = tmp_path_factory.mktemp("sharded-embedding")
    images = base / "images"
    build_sample_set(images)
    # The sample is mostly planted copies by design; its duplicate-fraction gate would block it.
    unsharded = Settings(
        image_root=str(images), out_dir=str(base / "unsharded"), embedder="offline", max_duplicate_fraction=1.0
    )
    # Batches of one in the sharded run: the most checkpoint files, written by the most writers.
    sharded = dataclasses.replace(unsharded, out_dir=str(base / "sharded"), batch_size=1)
    found: dict = {"sharded": sharded, "unsharded": unsharded}
    with dg.instance_for_test() as instance:
        # The shards read the image catalog (raw_images) that an earlier run materialized.
        assert dg.materialize([discover_raw_images], resources=resources_for(sharded), instance=instance).success
        hashes = distinct_hashes(sharded)
        by_shard = {key: in_shard({h: h for h in hashes}, key) for key in SHARD_KEYS}
        found["hashes"], found["by_shard"] = hashes, by_shard

        # The two largest shards as separate processes started at the same moment.
        concurrent = sorted(SHARD_KEYS, key=lambda key: (-len(by_shard[key]), key))[:2]
        found["processes"] = materialize_shards_in_processes(sharded, concurrent, base / "dagster_home")
        found["concurrent"], found["after_concurrent"] = concurrent, checkpoint_files(sharded)
        found["temporary_after_concurrent"] = sorted(path.name for path in checkpoint_dir(sharded).glob(".*"))

        shard_job = build_definitions(sharded).resolve_job_def(SHARDED_EMBEDDING_JOB)
        found["shard_metadata"] = {}
        for key in SHARD_KEYS:
            if key not in concurrent:
                result = shard_job.execute_in_process(partition_key=key, instance=instance)
                found["shard_metadata"][key] = materialization_metadata(result, "image_embedding_shards")
        # Running a finished shard again embeds nothing: what a rerun after a kill skips.
        found["shard_again"] = materialization_metadata(
            shard_job.execute_in_process(partition_key=concurrent[0], instance=instance), "image_embedding_shards"
        )
        found["before_dedup"] = checkpoint_files(sharded)
        # What a shard killed inside `checkpoint.write` leaves: a temporary file, never a batch.
        (checkpoint_dir(sharded) / ".batch-killed.parquet.tmp").write_bytes(b"PAR1 half a parquet file")

        found["sharded_dedup"] = (
            build_definitions(sharded)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        found["unsharded_dedup"] = (
            build_definitions(unsharded)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    return found


def test_shard_of_is_the_first_hex_digit_and_shards_partition_every_hash():
    rng = np.random.default_rng(0)
    hashes = {"".join(rng.choice(list("0123456789abcdef"), 64)): f"img{i}.png" for i in range(500)}
    shards = {key: in_shard(hashes, key) for key in SHARD_KEYS}
    assert all(shard_of(h) == key for key, members in shards.items() for h in members)
    assert sum(len(members) for members in shards.values()) == len(hashes)  # disjoint ...
    assert set().union(*shards.values()) == set(hashes)  # ... and covering
    assert all(shards.values())  # 500 random hashes reach all 16 shards
    assert in_shard(hashes, "3") == {h: p for h, p in hashes.items() if h.startswith("3")}


@pytest.mark.parametrize("bad", ["", "G00d", "A1b2", " 0abc"])
def test_a_hash_outside_the_hex_alphabet_belongs_to_no_shard(bad):
    with pytest.raises(ValueError):
        shard_of(bad)


def test_an_unknown_shard_key_is_refused():
    with pytest.raises(ValueError, match="unknown shard"):
        in_shard({"ab": "x.png"}, "g")


def test_checkpointed_hashes_reads_every_batch_and_skips_one_removed_meanwhile(tmp_path, monkeypatch):
    checkpoint = EmbeddingCheckpoint(tmp_path / "checkpoints")
    checkpoint.write(["a1", "b2"], np.eye(2, 4, dtype=np.float32))
    checkpoint.write(["c3"], np.ones((1, 4), np.float32))
    (checkpoint.directory / ".batch-killed.parquet.tmp").write_bytes(b"PAR1 half a parquet file")
    assert checkpoint.hashes() == {"a1", "b2", "c3"}
    # `image_vectors` clears the checkpoints while a shard lists them: the removed file is skipped.
    listed = checkpoint.shards() + [checkpoint.directory / "batch-removed.parquet"]
    monkeypatch.setattr(checkpoint, "shards", lambda: listed)
    assert checkpoint.hashes() == {"a1", "b2", "c3"}


def test_the_sample_spreads_over_many_shards(runs):
    # The comparison below is only as strong as the shards it exercises.
    assert len(runs["hashes"]) >= 12
    assert sum(1 for members in runs["by_shard"].values() if members) >= 8


def test_concurrent_shard_processes_write_separate_complete_files(runs):
    for process in runs["processes"]:
        assert process.returncode == 0, process.stdout[-4000:]
    a, b = runs["concurrent"]
    files = runs["after_concurrent"]
    held = [h for hashes in files.values() for h in hashes]
    # Each content of the two shards exactly once, one file per batch of one: no file was shared,
    # overwritten or lost between the two writers.
    assert sorted(held) == sorted(runs["by_shard"][a].keys() | runs["by_shard"][b].keys())
    assert len(files) == len(runs["by_shard"][a]) + len(runs["by_shard"][b])
    assert runs["temporary_after_concurrent"] == []  # every temporary file was renamed into place


def test_each_partition_embeds_exactly_its_shard(runs):
    metadata = runs["shard_metadata"]
    assert set(metadata) == set(SHARD_KEYS) - set(runs["concurrent"])
    for key, entries in metadata.items():
        assert entries["shard"] == key
        assert entries["contents_in_shard"] == len(runs["by_shard"][key])
        assert entries["embedded_this_run"] == len(runs["by_shard"][key]), key
        assert entries["skipped_in_vector_table"] == 0 and entries["skipped_already_checkpointed"] == 0
    files = runs["before_dedup"]
    assert sorted(h for hashes in files.values() for h in hashes) == sorted(runs["hashes"])  # every content once
    batch_size = runs["sharded"].batch_size
    assert len(files) == sum(math.ceil(len(members) / batch_size) for members in runs["by_shard"].values())


def test_a_finished_shard_run_again_embeds_nothing(runs):
    again = runs["shard_again"]
    assert again["shard"] == runs["concurrent"][0]
    assert again["embedded_this_run"] == 0
    assert (
        again["skipped_already_checkpointed"] == again["contents_in_shard"] == len(runs["by_shard"][again["shard"]]) > 0
    )


def test_dedup_after_the_shards_embeds_nothing_and_inserts_every_shard(runs):
    sharded, unsharded = runs["sharded_dedup"], runs["unsharded_dedup"]
    assert sharded.success, failures(sharded)
    assert unsharded.success, failures(unsharded)
    # The unsharded run shows what the count is when nothing was checkpointed.
    assert materialization_metadata(unsharded, "image_embeddings")["embedded_this_run"] == len(runs["hashes"])
    assert materialization_metadata(sharded, "image_embeddings")["embedded_this_run"] == 0
    assert materialization_metadata(sharded, "image_vectors")["inserted_this_run"] == len(runs["hashes"])
    assert checkpoint_files(runs["sharded"]) == {}  # inserted, so cleared (the stray .tmp is no batch)


def test_sharded_vector_table_equals_the_unsharded_one(runs):
    sharded, unsharded = vector_table(runs["sharded"]), vector_table(runs["unsharded"])
    assert sharded.index.is_unique and unsharded.index.is_unique  # no duplicated row
    assert len(sharded) == len(unsharded) == len(runs["hashes"])
    assert list(sharded.index) == list(unsharded.index) == sorted(runs["hashes"])
    assert set(sharded["model_id"]) == set(unsharded["model_id"]) == {model_id_for(runs["sharded"])}
    left, right = np.stack(sharded["vector"]), np.stack(unsharded["vector"])
    assert left.shape == right.shape
    # Equal to float32 rounding, not bit for bit: batches of one here, one batch of all there, and
    # the backbone's kernels round differently by batch size (measured: at most 6e-8).
    assert np.allclose(left, right, rtol=0, atol=1e-6), f"largest difference {np.abs(left - right).max():.3g}"


def test_sharded_exports_equal_the_unsharded_ones(runs):
    for export in ("uniqueness.csv", "duplicates.csv", "clean.csv", "rejected.csv"):
        sharded = pd.read_csv(Path(runs["sharded"].out_dir) / export)
        unsharded = pd.read_csv(Path(runs["unsharded"].out_dir) / export)
        assert len(sharded) > 0, export
        pd.testing.assert_frame_equal(sharded, unsharded, check_exact=False, atol=1e-6, obj=export)
    labels = set(pd.read_csv(Path(runs["sharded"].out_dir) / "uniqueness.csv")["label"])
    assert labels == {"duplicate", "near_duplicate", "unique"}  # every kind of decision was compared

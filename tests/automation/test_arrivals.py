"""Incremental dedup: the arrival sensor, and incremental runs equal to a full run."""

import random
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.automation.maintenance import vector_table_maintenance
from imgdedup_pipeline.core.sample import build_sample_set
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource


def sensor_for(settings: Settings):
    return build_definitions(settings).get_sensor_def("new_images_sensor")


def evaluate(sensor, instance, image_root, cursor):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"image_store": ImageStoreResource(image_root=str(image_root))}
    )
    result = sensor(context)
    return result, context.cursor


def test_sensor_requests_one_run_for_new_files_and_none_when_nothing_changed(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    sensor = sensor_for(Settings(image_root=str(images), out_dir=str(tmp_path / "out")))
    with dg.instance_for_test() as instance:
        first, cursor = evaluate(sensor, instance, images, None)
        assert isinstance(first, dg.RunRequest)
        again, cursor = evaluate(sensor, instance, images, cursor)
        assert isinstance(again, dg.SkipReason)

        Image.new("RGB", (8, 8), "blue").save(images / "b.png")
        arrived, cursor = evaluate(sensor, instance, images, cursor)
        assert isinstance(arrived, dg.RunRequest) and arrived.run_key != first.run_key
        assert isinstance(evaluate(sensor, instance, images, cursor)[0], dg.SkipReason)

        (images / "a.png").unlink()  # a removal changes the set too
        assert isinstance(evaluate(sensor, instance, images, cursor)[0], dg.RunRequest)


SEARCH_MODES: list[dict] = []


def _run(settings, instance):
    result = (
        build_definitions(settings)
        .resolve_job_def(DEDUP_JOB)
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert result.success
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    SEARCH_MODES.append(metadata["uniqueness_scores"]["neighbor_search"].value)
    return metadata["image_embeddings"]["embedded_this_run"].value


def _comparable(out_dir):
    table = pd.read_csv(out_dir / "uniqueness.csv").sort_values("path", ignore_index=True)
    return table[["path", "uniqueness", "label", "group_id", "duplicate_of", "removed"]]


@pytest.mark.parametrize("seed", [1, 2], ids=["split-seed-1", "split-seed-2"])
def test_incremental_runs_equal_a_full_run(tmp_path, seed, monkeypatch):
    # Batches here are a third of a small set: let the neighbour search update incrementally
    # however many rows changed, so that path is the one compared with the full run.
    monkeypatch.setattr("imgdedup_pipeline.core.search.cache.MAX_CHANGED_FRACTION", 1.0)
    SEARCH_MODES.clear()
    pool = build_sample_set(tmp_path / "pool")
    files = sorted(p for p in pool["files"] if p not in pool["corrupt"])
    rng = random.Random(seed)
    rng.shuffle(files)
    cuts = sorted(rng.sample(range(1, len(files)), 3))
    batches = [files[a:b] for a, b in zip([0, *cuts], [*cuts, len(files)])]
    images = tmp_path / "images"
    incremental = Settings(
        image_root=str(images), out_dir=str(tmp_path / "incremental"), embedder="offline", max_duplicate_fraction=1.0
    )

    with dg.instance_for_test() as instance:
        seen_contents: set[str] = set()
        for number, batch in enumerate(batches):
            for relative in batch:
                (images / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tmp_path / "pool" / relative, images / relative)
            if number == 2:  # one deletion and one content change under the same path
                (images / batches[0][0]).unlink()
                changed = images / batches[0][1]
                Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(
                    changed, format="PNG"
                )
            embedded = _run(incremental, instance)
            current = set(pd.read_csv(tmp_path / "incremental" / "clean.csv")["pixel_hash"]) | set()
            catalog = pd.read_parquet(next((tmp_path / "incremental" / "state").glob("catalog-*.parquet")))
            new_contents = set(catalog["pixel_hash"]) - seen_contents
            assert embedded == len(new_contents), (
                f"batch {number} embedded {embedded}, expected only the new {len(new_contents)}"
            )
            seen_contents |= set(catalog["pixel_hash"])
            assert current  # the clean set is never empty here

        assert _run(incremental, instance) == 0  # nothing new: nothing embedded
        # The embedding search is updated in place; the pHash search (pairs within its cutoff only) runs in full.
        assert all(modes["embedding"].startswith("incremental") for modes in SEARCH_MODES[1:]), SEARCH_MODES
        full = Settings(
            image_root=str(images), out_dir=str(tmp_path / "full"), embedder="offline", max_duplicate_fraction=1.0
        )
        _run(full, instance)

    pd.testing.assert_frame_equal(
        _comparable(tmp_path / "incremental"), _comparable(tmp_path / "full"), check_exact=False, atol=1e-6
    )


def test_vector_table_maintenance_compacts(tmp_path):
    lancedb = LanceDBResource(uri=str(tmp_path / "lancedb"))
    for batch in range(3):
        lancedb.insert_missing("model-a", [f"hash-{batch}"], np.ones((1, 4), np.float32))
    version_before = lancedb.open_vectors("model-a").version
    result = vector_table_maintenance.execute_in_process(resources={"lancedb": lancedb})
    assert result.success
    table = lancedb.open_vectors("model-a")
    assert table.version > version_before and table.count_rows() == 3

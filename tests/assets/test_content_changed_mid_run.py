"""A file whose bytes change between the catalog step and the embedding step (issue 13, item 1).

Its new pixels' vector must never be stored under the old pixel hash: the file is rejected as
`changed_during_run` for this run (every file still in exactly one collection), and the next run,
with the original put back, embeds the original's pixels for real.
"""

import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.assets.raw_images import discover_raw_images
from imgdedup_pipeline.core.embedders import EfficientNetLite0Embedder
from imgdedup_pipeline.core.images import load_rgb, pixel_hash
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import ALL_ASSETS, resources_for
from imgdedup_pipeline.resources.lancedb import LanceDBResource

PHOTOS = "tests/data/base_images"


@pytest.fixture()
def photo_folder(bench_data, tmp_path):
    source = sorted((bench_data / "idealo-imagededup" / PHOTOS).glob("*.jpg"))[:4]
    images = tmp_path / "images"
    images.mkdir()
    for position, photo in enumerate(source[:3]):
        shutil.copy(photo, images / f"photo-{position}.jpg")
    return images, source[3]


def stored_vector(settings: Settings, model_id: str, content: str) -> np.ndarray | None:
    return LanceDBResource(uri=settings.vector_store_uri).read_vectors(model_id, {content}).get(content)


def test_a_file_replaced_between_catalog_and_embedding_never_gets_the_new_pixels_vector(photo_folder, tmp_path):
    images, other_photo = photo_folder
    swapped = images / "photo-0.jpg"
    original_bytes = swapped.read_bytes()
    original_hash = pixel_hash(load_rgb(swapped))
    settings = Settings(
        image_root=str(images), out_dir=str(tmp_path / "out"), embedder="offline", max_duplicate_fraction=1.0
    )
    embedder = EfficientNetLite0Embedder()
    resources = resources_for(settings)

    with dg.instance_for_test() as instance:
        catalog = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, selection=[discover_raw_images])
        assert catalog.success
        shutil.copy(other_photo, swapped)  # the file changes after it was catalogued
        rest = dg.materialize(
            ALL_ASSETS,
            resources=resources,
            instance=instance,
            selection=dg.AssetSelection.all() - dg.AssetSelection.assets(discover_raw_images),
        )
        assert rest.success

        # Nothing is stored under the catalogued hash: the file's bytes are not the ones hashed.
        assert stored_vector(settings, embedder.model_id, original_hash) is None
        out = tmp_path / "out"
        rejected = pd.read_csv(out / "rejected.csv")
        assert rejected.set_index("path").loc["photo-0.jpg", "reason"] == "changed_during_run"
        clean, duplicates = pd.read_csv(out / "clean.csv"), pd.read_csv(out / "duplicates.csv")
        placed = list(clean["path"]) + list(duplicates["path"]) + list(rejected["path"])
        assert sorted(placed) == ["photo-0.jpg", "photo-1.jpg", "photo-2.jpg"]
        assert "photo-0.jpg" not in set(pd.read_csv(out / "uniqueness.csv")["path"])

        # The original is put back: the next run embeds the original's own pixels under its hash.
        swapped.write_bytes(original_bytes)
        again = dg.materialize(ALL_ASSETS, resources=resources, instance=instance)
        assert again.success
    vector = stored_vector(settings, embedder.model_id, original_hash)
    expected = embedder.embed([load_rgb(swapped)])[0]
    assert vector is not None and float(np.dot(vector, expected)) > 0.98
    assert "photo-0.jpg" in set(pd.read_csv(tmp_path / "out" / "clean.csv")["path"])
    assert "photo-0.jpg" not in set(pd.read_csv(tmp_path / "out" / "rejected.csv")["path"])


def test_a_file_changed_within_one_run_is_in_the_published_rejected_csv(photo_folder, tmp_path, monkeypatch):
    """The catalog and the clean set in one run: clean_dataset's rejected.csv (with the changed file)
    is the one published, and the set published before is left as it was."""
    from imgdedup_pipeline.assets import raw_images

    images, other_photo = photo_folder
    swapped = images / "photo-0.jpg"
    settings = Settings(
        image_root=str(images), out_dir=str(tmp_path / "out"), embedder="offline", max_duplicate_fraction=1.0
    )
    resources = resources_for(settings)
    out = tmp_path / "out"
    original_bytes = swapped.read_bytes()
    with dg.instance_for_test() as instance:
        swapped.unlink()  # arrives after the first published set, so the second run embeds it
        assert dg.materialize(ALL_ASSETS, resources=resources, instance=instance).success
        swapped.write_bytes(original_bytes)
        before = (out / "rejected.csv").read_bytes()
        previous_set = (out / "rejected.csv").resolve()

        def catalog_then_change(*args, **kwargs):
            catalogued = raw_images.build_catalog.__wrapped__(*args, **kwargs)
            shutil.copy(other_photo, swapped)  # after the catalog read it, before anything embeds it
            return catalogued

        catalog_then_change.__wrapped__ = raw_images.build_catalog  # type: ignore[attr-defined]
        monkeypatch.setattr(raw_images, "build_catalog", catalog_then_change)
        assert dg.materialize(ALL_ASSETS, resources=resources, instance=instance).success

    rejected = pd.read_csv(out / "rejected.csv").set_index("path")
    assert rejected.loc["photo-0.jpg", "reason"] == "changed_during_run"
    placed = [*pd.read_csv(out / "clean.csv")["path"], *pd.read_csv(out / "duplicates.csv")["path"], *rejected.index]
    assert sorted(placed) == ["photo-0.jpg", "photo-1.jpg", "photo-2.jpg"]
    assert previous_set.read_bytes() == before, "the previously published set must not change"

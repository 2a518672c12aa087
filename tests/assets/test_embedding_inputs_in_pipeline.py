"""In a first run the embedding step takes each new JPEG's input from the catalog's decode of the
bytes it hashed (issue 14 item 2), and the vectors are the ones decoding the files gives."""
import shutil

import dagster as dg
import numpy as np
import pytest

from assets.raw_images import discover_raw_images
from core.embedders import EfficientNetLite0Embedder, embed_in_batches
from core.images import load_rgb
from core.settings import Settings
from definitions import ALL_ASSETS, resources_for
from resources.lancedb import LanceDBResource


@pytest.fixture()
def folder(bench_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for photo in sorted((bench_data / "idealo-imagededup" / "tests" / "data" / "base_images").glob("*.jpg"))[:5]:
        shutil.copy(photo, images / photo.name)
    return images


def test_the_catalog_decode_feeds_the_embedding_step_and_is_removed_after_it(folder, tmp_path):
    out = tmp_path / "out"
    settings = Settings(image_root=str(folder), out_dir=str(out), embedder="offline", max_duplicate_fraction=1.0)
    resources = resources_for(settings)
    inputs = out / "state" / "embedding-inputs"
    with dg.instance_for_test() as instance:
        catalog = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, selection=[discover_raw_images])
        assert catalog.success
        assert len(list(inputs.glob("*.npy"))) == 5
        rest = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, selection=dg.AssetSelection.all() - dg.AssetSelection.assets(discover_raw_images))
        assert rest.success
    assert not inputs.exists()  # disposable: emptied once the vectors are checkpointed

    raw = catalog.output_for_node("discover_raw_images", "raw_images")
    embedder = EfficientNetLite0Embedder()
    paths = dict(zip(raw["pixel_hash"], (str(folder / p) for p in raw["path"])))
    expected = {h: v for hashes, vectors in embed_in_batches(paths, embedder, lambda path, draft: load_rgb(path, draft_size=draft)) for h, v in zip(hashes, vectors)}
    stored = LanceDBResource(uri=settings.vector_store_uri).read_vectors(embedder.model_id, set(paths))
    assert stored.keys() == expected.keys()
    for content, vector in expected.items():
        assert np.allclose(stored[content], vector, atol=1e-5)

"""The catalog stores the embedding step's input of each new JPEG (issue 14 item 2): the embedding
step gets exactly the pixels it would decode from the file, never the pixels of a file that
changed since the catalog, and falls back to the file when an entry is missing or damaged."""
import shutil

import numpy as np
import pytest
from PIL import Image

from assets.image_embeddings import verified_image_loader
from core.catalog import build_catalog
from core.embedding_inputs import EmbeddingInputCache
from core.images import FileChangedError, discover_image_files, load_rgb
from resources.image_store import ImageStoreResource

DRAFT = (224, 224)


@pytest.fixture()
def folder(bench_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for photo in sorted((bench_data / "idealo-imagededup" / "tests" / "data" / "base_images").glob("*.jpg"))[:4]:
        shutil.copy(photo, images / photo.name)
    Image.open(images / sorted(p.name for p in images.iterdir())[0]).save(images / "lossless.png")  # not a JPEG: no entry
    return images


def catalog(images, cache):
    rows, rejected = build_catalog(images, discover_image_files(images), embedding_inputs=cache)
    assert rejected.empty
    return rows


def test_each_new_jpeg_gets_the_exact_image_the_embedding_step_would_decode(folder, tmp_path):
    cache = EmbeddingInputCache(tmp_path / "inputs")
    rows = catalog(folder, cache)
    jpegs = rows[rows["path"].str.endswith(".jpg")]
    assert len(jpegs) == 4 and len(list(cache.directory.glob("*.npy"))) == 4  # the PNG has no reduced decode
    for path, sha in zip(jpegs["path"], jpegs["file_sha256"]):
        stored, decoded = cache.get(sha, DRAFT), load_rgb(folder / path, draft_size=DRAFT)
        assert stored is not None and stored.size == decoded.size and stored.size != Image.open(folder / path).size
        assert np.array_equal(np.asarray(stored), np.asarray(decoded))
    assert cache.get(jpegs["file_sha256"].iloc[0], (384, 384)) is None  # another draft size decodes the file

    loader = verified_image_loader(rows, ImageStoreResource(image_root=str(folder)), cache)
    for path in rows["path"]:
        assert np.array_equal(np.asarray(loader(path, DRAFT)), np.asarray(load_rgb(folder / path, draft_size=DRAFT)))


def test_a_file_changed_since_the_catalog_is_not_loaded_from_its_stored_decode(folder, tmp_path):
    cache = EmbeddingInputCache(tmp_path / "inputs")
    rows = catalog(folder, cache)
    first, second = sorted(p for p in rows["path"] if p.endswith(".jpg"))[1:3]  # the PNG has the first one's pixels
    shutil.copy(folder / second, folder / first)
    loader = verified_image_loader(rows, ImageStoreResource(image_root=str(folder)), cache)
    with pytest.raises(FileChangedError):
        loader(first, DRAFT)


def test_a_damaged_entry_is_decoded_from_the_file(folder, tmp_path):
    cache = EmbeddingInputCache(tmp_path / "inputs")
    rows = catalog(folder, cache)
    path = sorted(p for p in rows["path"] if p.endswith(".jpg"))[0]
    sha = rows.set_index("path").loc[path, "file_sha256"]
    entry = next(cache.directory.glob(f"{sha}-*.npy"))
    entry.write_bytes(entry.read_bytes()[:100])
    assert cache.get(sha, DRAFT) is None
    loader = verified_image_loader(rows, ImageStoreResource(image_root=str(folder)), cache)
    assert np.array_equal(np.asarray(loader(path, DRAFT)), np.asarray(load_rgb(folder / path, draft_size=DRAFT)))


def test_the_cache_stays_within_its_budget(folder, tmp_path):
    one_entry = max(load_rgb(p, draft_size=DRAFT).width * load_rgb(p, draft_size=DRAFT).height * 3 for p in folder.glob("*.jpg"))
    cache = EmbeddingInputCache(tmp_path / "inputs", budget_bytes=2 * one_entry)
    catalog(folder, cache)
    stored = list(cache.directory.glob("*.npy"))
    assert 1 <= len(stored) <= 2
    cache.clear()
    assert not cache.directory.exists()

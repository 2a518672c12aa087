"""Tests for core.catalog and core.checkpoints: every discovered file lands in exactly one table,
unchanged files are not decoded twice, and embedding checkpoints round-trip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_images import write_noise_png

from imgdedup_pipeline.core import catalog
from imgdedup_pipeline.core.catalog import IMAGE_COLUMNS, REJECTED_COLUMNS, build_catalog
from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
from imgdedup_pipeline.core.images import describe_image, discover_image_files, image_id_for


@pytest.fixture
def image_root(tmp_path) -> Path:
    """A small root with good images, an exact copy, and one of each kind of rejection."""
    root = tmp_path / "root"
    write_noise_png(root / "a.png", 1)
    write_noise_png(root / "nested/b.png", 2, size=(9, 3))
    (root / "nested" / "copy_of_a.png").write_bytes((root / "a.png").read_bytes())
    Image.new("RGB", (4, 4), (10, 20, 30)).save(root / "c.jpg", quality=90)
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    noisy = np.random.default_rng(4).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.jpg", quality=90)
    data = (tmp_path / "noisy.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])  # cut in the scan data
    (root / "header_cut.jpg").write_bytes(data[:200])  # cut inside the header segments
    outside = write_noise_png(tmp_path / "outside.png", 3)
    (root / "escape.png").symlink_to(outside)
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


EXPECTED_IMAGES = ["a.png", "c.jpg", "nested/b.png", "nested/copy_of_a.png"]
EXPECTED_REJECTED = {"empty.png": "empty_file", "escape.png": "symlink_outside_root", "text.jpg": "not_an_image"}


def test_every_discovered_file_is_in_exactly_one_table(image_root):
    discovered = discover_image_files(image_root)
    images, rejected = build_catalog(image_root, discovered, workers=2)
    assert list(images.columns) == IMAGE_COLUMNS and list(rejected.columns) == REJECTED_COLUMNS
    assert images["path"].tolist() == EXPECTED_IMAGES
    assert set(images["path"]).isdisjoint(rejected["path"])
    assert sorted(images["path"].tolist() + rejected["path"].tolist()) == sorted(f.path for f in discovered)
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert {path: reasons[path] for path in EXPECTED_REJECTED} == EXPECTED_REJECTED
    assert reasons["truncated.jpg"] in ("truncated", "decode_error")
    assert "header_cut.jpg" in reasons  # rejected whatever the reason (see test_images for the label)
    assert rejected["path"].is_monotonic_increasing


def test_image_rows_describe_the_files(image_root):
    images, rejected = build_catalog(image_root, discover_image_files(image_root))
    row = images.set_index("path").loc["nested/b.png"]
    facts = describe_image(image_root / "nested" / "b.png")
    assert row["image_id"] == image_id_for("nested/b.png")
    assert (row["width"], row["height"], row["pixel_hash"], row["content_pixels"]) == (
        9,
        3,
        facts.pixel_hash,
        facts.content_pixels,
    )
    assert row["bytes"] == (image_root / "nested" / "b.png").stat().st_size
    assert row["mtime_ns"] == (image_root / "nested" / "b.png").stat().st_mtime_ns
    assert row["first_seen"] == pd.Timestamp(row["mtime_ns"], unit="ns", tz="UTC")
    assert (
        images.set_index("path").loc["a.png", "file_sha256"]
        == images.set_index("path").loc["nested/copy_of_a.png", "file_sha256"]
    )
    assert images["pixel_hash"].nunique() == 3  # a.png and its byte copy share content
    assert list(row["phashes"]) == list(facts.phashes) and len(row["phashes"]) == 8
    for column in ("bytes", "mtime_ns", "width", "height", "content_pixels", "frames"):
        assert images[column].dtype == np.int64, column
    assert str(images["first_seen"].dtype).startswith("datetime64") and images["first_seen"].dt.tz is not None
    assert rejected.set_index("path").loc["empty.png", "bytes"] == 0
    assert pd.isna(rejected.set_index("path").loc["escape.png", "bytes"])


def test_rows_carry_the_turn_read_from_black_corners(tmp_path):
    """The catalog reads a turned copy's angle from its black corners once, for the turned-copy
    check at scoring (which then decodes no other content to look for them); NaN elsewhere."""
    from skimage import data

    photo = Image.fromarray(data.chelsea())
    photo.save(tmp_path / "photo.png")
    photo.rotate(30.0, resample=Image.Resampling.BICUBIC).save(tmp_path / "turned.png")
    images, _ = build_catalog(tmp_path, discover_image_files(tmp_path))
    turns = images.set_index("path")["turned_degrees"]
    assert images["turned_degrees"].dtype == np.float64
    assert pd.isna(turns["photo.png"]) and abs(abs(turns["turned.png"]) - 30.0) <= 1.0


def test_empty_root_gives_empty_typed_tables(tmp_path):
    images, rejected = build_catalog(tmp_path, [])
    assert images.empty and rejected.empty
    assert list(images.columns) == IMAGE_COLUMNS and images["bytes"].dtype == np.int64


def test_progress_reports_every_decoded_file(image_root):
    calls = []
    discovered = discover_image_files(image_root)
    build_catalog(image_root, discovered, progress=lambda done, total: calls.append((done, total)))
    to_decode = len(discovered)
    assert calls[-1] == (to_decode, to_decode)


@pytest.fixture
def counted_describe(monkeypatch):
    """Counts the files build_catalog decodes, by path name."""
    decoded: list[str] = []
    real = catalog.describe_image

    def counting(path, max_pixels, **kwargs):
        decoded.append(Path(path).name)
        return real(path, max_pixels, **kwargs)

    monkeypatch.setattr(catalog, "describe_image", counting)
    return decoded


def _good_root(tmp_path) -> Path:
    root = tmp_path / "root"
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        write_noise_png(root / name, i)
    return root


def test_unchanged_files_are_reused_without_decoding(tmp_path, counted_describe):
    root = _good_root(tmp_path)
    first, _ = build_catalog(root, discover_image_files(root))
    assert sorted(counted_describe) == ["a.png", "b.png", "c.png"]
    counted_describe.clear()

    second, rejected = build_catalog(root, discover_image_files(root), previous=first)
    assert counted_describe == []
    assert rejected.empty
    pd.testing.assert_frame_equal(second, first)


def test_previous_catalog_from_an_older_schema_is_not_reused(tmp_path, counted_describe):
    root = _good_root(tmp_path)
    first, _ = build_catalog(root, discover_image_files(root))
    counted_describe.clear()
    older = first.drop(columns=[IMAGE_COLUMNS[-1]])
    second, _ = build_catalog(root, discover_image_files(root), previous=older)
    assert sorted(counted_describe) == ["a.png", "b.png", "c.png"]
    pd.testing.assert_frame_equal(second, first)


@pytest.mark.parametrize(
    "change, expected_decoded",
    [("touch_mtime", ["b.png"]), ("rewrite_content", ["b.png"]), ("add_file", ["new.png"]), ("delete_file", [])],
    ids=["mtime_changed", "content_changed", "new_file", "deleted_file"],
)
def test_only_changed_files_are_decoded_again(tmp_path, counted_describe, change, expected_decoded):
    root = _good_root(tmp_path)
    first, _ = build_catalog(root, discover_image_files(root))
    counted_describe.clear()
    target = root / "b.png"
    if change == "touch_mtime":
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    elif change == "rewrite_content":
        stat = target.stat()
        write_noise_png(target, 99, size=(7, 7))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: size still differs
    elif change == "add_file":
        write_noise_png(root / "new.png", 42)
    else:
        target.unlink()

    second, _ = build_catalog(root, discover_image_files(root), previous=first)
    assert counted_describe == expected_decoded
    expected_paths = sorted(
        set(first["path"]) - ({"b.png"} if change == "delete_file" else set())
        | ({"new.png"} if change == "add_file" else set())
    )
    assert second["path"].tolist() == expected_paths
    if change == "rewrite_content":
        assert second.set_index("path").loc["b.png", "pixel_hash"] != first.set_index("path").loc["b.png", "pixel_hash"]
        assert second.set_index("path").loc["b.png", "width"] == 7


def test_previous_row_is_not_reused_for_a_file_that_became_a_bad_symlink(tmp_path, counted_describe):
    root = _good_root(tmp_path)
    first, _ = build_catalog(root, discover_image_files(root))
    outside = write_noise_png(tmp_path / "outside.png", 5)
    (root / "b.png").unlink()
    (root / "b.png").symlink_to(outside)
    images, rejected = build_catalog(root, discover_image_files(root), previous=first)
    assert "b.png" not in set(images["path"])
    assert rejected.set_index("path").loc["b.png", "reason"] == "symlink_outside_root"


def test_truncated_animated_gif_lands_in_rejected(tmp_path):
    root = _good_root(tmp_path)
    frames = [Image.fromarray(np.random.default_rng(s).integers(0, 256, (16, 16, 3), dtype=np.uint8)) for s in range(3)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    data = (root / "anim.gif").read_bytes()
    (root / "anim.gif").write_bytes(data[: len(data) // 2])
    images, rejected = build_catalog(root, discover_image_files(root))
    assert rejected["path"].tolist() == ["anim.gif"]
    assert rejected["reason"].iloc[0] in ("truncated", "decode_error")
    assert images["path"].tolist() == ["a.png", "b.png", "sub/c.png"]


# --- Embedding checkpoints ----------------------------------------------------------------------


def test_checkpoint_write_load_clear_round_trip(tmp_path):
    checkpoint = EmbeddingCheckpoint(tmp_path / "ckpt" / "model")
    assert checkpoint.load() == {} and checkpoint.shards() == []
    first = np.arange(6, dtype=np.float64).reshape(2, 3) / 10
    second = np.array([[1.0, -2.0, 0.5]])
    checkpoint.write(["h1", "h2"], first)
    checkpoint.write(["h3"], second)

    assert len(checkpoint.shards()) == 2
    assert not list(checkpoint.directory.glob(".*.tmp"))
    loaded = checkpoint.load()
    assert sorted(loaded) == ["h1", "h2", "h3"]
    np.testing.assert_array_equal(loaded["h2"], first[1].astype(np.float32))
    np.testing.assert_array_equal(loaded["h3"], second[0].astype(np.float32))
    assert loaded["h1"].dtype == np.float32 and loaded["h1"].shape == (3,)

    # A fresh object on the same directory sees the same shards (a resumed run).
    assert sorted(EmbeddingCheckpoint(checkpoint.directory).load()) == ["h1", "h2", "h3"]

    checkpoint.clear()
    assert checkpoint.shards() == [] and checkpoint.load() == {}
    checkpoint.clear()  # clearing twice is harmless


def test_checkpoint_ignores_partial_temporary_shards(tmp_path):
    checkpoint = EmbeddingCheckpoint(tmp_path)
    checkpoint.write(["done"], np.ones((1, 4)))
    (tmp_path / ".batch-killed.parquet.tmp").write_bytes(b"PAR1 half written")
    assert list(checkpoint.load()) == ["done"]


FIRST_IMPORTS_BY_THREAD = """
import sys, threading
first_import_thread = {}
def record(event, args):
    if event == "import" and args[0] not in sys.modules:
        first_import_thread.setdefault(args[0], threading.current_thread().name)
sys.addaudithook(record)
from imgdedup_pipeline.core.catalog import build_catalog
from imgdedup_pipeline.core.images import discover_image_files
root = sys.argv[1]
images, rejected = build_catalog(root, discover_image_files(root), workers=4)
assert len(images) == 5, images
print(sorted(name for name, thread in first_import_thread.items() if thread != "MainThread"))
"""


def test_decoding_threads_import_nothing_for_the_first_time(image_root):
    """Several threads importing one package for the first time at once can deadlock Python's
    import locks (scipy raised `_DeadlockError` in a decoding thread and a run failed): every
    module decoding needs is imported before the threads start. A fresh interpreter, so that
    nothing is imported yet."""
    import subprocess
    import sys

    turned = Image.radial_gradient("L").convert("RGB").resize((96, 96)).rotate(30, expand=True)
    turned.save(image_root / "turned.png")  # black corners: the rotated-copy test's path
    project_root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORTS_BY_THREAD, str(image_root)],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

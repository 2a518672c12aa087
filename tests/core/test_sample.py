"""Tests for core.sample: the demo folder is reproducible and its manifest tells the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from imgdedup_pipeline.core.sample import build_sample_set


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    """Build the sample once per module; building takes a fraction of a second but adds up."""
    return build_sample_set(tmp_path_factory.mktemp("sample"))


def _walk(root: Path) -> dict[str, bytes]:
    """Every file under root as '/'-separated relative path -> bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _relations(sample: dict, relation: str) -> list[tuple[str, str]]:
    return [(rel, entry["original"]) for rel, entry in sample["files"].items() if entry["relation"] == relation]


def test_building_twice_gives_identical_bytes(tmp_path):
    first = build_sample_set(tmp_path / "a")
    second_root = tmp_path / "b"
    build_sample_set(second_root)
    before = _walk(tmp_path / "a")
    # Rebuilding over an existing sample must overwrite it with the very same bytes.
    rebuilt = build_sample_set(tmp_path / "a")
    assert rebuilt == first
    assert _walk(tmp_path / "a") == before
    assert _walk(second_root) == before


def test_manifest_lists_every_file_written(sample):
    root = Path(sample["root"])
    assert set(_walk(root)) == set(sample["files"])
    assert 20 <= len(sample["files"]) <= 30
    assert set(sample["corrupt"]) <= set(sample["files"])
    for rel, entry in sample["files"].items():
        assert "\\" not in rel and not rel.startswith("/")
        if entry["original"] is not None:
            assert sample["files"][entry["original"]]["relation"] == "original"


def test_originals_are_distinct_rgb_photos(sample):
    root = Path(sample["root"])
    originals = [rel for rel, entry in sample["files"].items() if entry["relation"] == "original"]
    assert 8 <= len(originals) <= 10
    contents = set()
    for rel in originals:
        pixels = _pixels(root / rel)
        assert pixels.ndim == 3 and pixels.shape[2] == 3
        contents.add(pixels.tobytes())
    assert len(contents) == len(originals)


def test_exact_copy_is_byte_identical(sample):
    root = Path(sample["root"])
    copies = _relations(sample, "exact_copy")
    assert copies
    for rel, original in copies:
        assert (root / rel).read_bytes() == (root / original).read_bytes()


def test_png_reencode_has_same_pixels_but_different_bytes(sample):
    root = Path(sample["root"])
    copies = _relations(sample, "png_reencode")
    assert copies
    for rel, original in copies:
        assert rel.endswith(".png") and original.endswith(".png")
        assert (root / rel).read_bytes() != (root / original).read_bytes()
        np.testing.assert_array_equal(_pixels(root / rel), _pixels(root / original))


def test_derived_copies_have_expected_geometry(sample):
    root = Path(sample["root"])
    ((resized, original),) = _relations(sample, "resized")
    small, big = _pixels(root / resized), _pixels(root / original)
    assert small.shape[:2] == (big.shape[0] // 2, big.shape[1] // 2)
    ((cropped, original),) = _relations(sample, "cropped")
    crop, full = _pixels(root / cropped), _pixels(root / original)
    assert crop.shape[0] * crop.shape[1] / (full.shape[0] * full.shape[1]) == pytest.approx(0.9, abs=0.01)


def test_corrupt_files_fail_to_decode(sample, monkeypatch):
    # Pin Pillow's default, in case another module in the session loosened it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    root = Path(sample["root"])
    assert sorted(sample["corrupt"]) == ["corrupt/not_really.png", "corrupt/truncated.jpg"]
    for rel in sample["corrupt"]:
        # UnidentifiedImageError (not an image at all) is an OSError too.
        with pytest.raises(OSError), Image.open(root / rel) as image:
            image.load()

"""A small, reproducible demo image folder with planted duplicates and corrupt files.

The photos come from `skimage.data`, which ships them inside the scikit-image wheel, so the sample
needs no network access. Every planted copy records which original it was derived from, so a run of
the pipeline over the folder can be checked against a known answer.

Everything is written deterministically: fixed encoder settings, no timestamps or other metadata,
so building the sample twice gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from skimage import data as skdata

JPEG_QUALITY = 92
RECOMPRESS_QUALITY = 60
THUMBNAIL_QUALITY = 75

RELATION_ORIGINAL = "original"
RELATION_EXACT_COPY = "exact_copy"
RELATION_PNG_REENCODE = "png_reencode"
RELATION_FORMAT_CHANGE = "format_change"
RELATION_JPEG_RECOMPRESS = "jpeg_recompress"
RELATION_RESIZED = "resized"
RELATION_THUMBNAIL = "thumbnail"
RELATION_CROPPED = "cropped"
RELATION_BRIGHTENED = "brightened"
RELATION_TRUNCATED = "truncated"
RELATION_NOT_AN_IMAGE = "not_an_image"

# (skimage.data loader name, file name under originals/). Only photographs, and only distinct
# ones: `skimage.data.cat` is the very same array as `chelsea`, so it would be a hidden duplicate.
# A mix of PNG and JPEG originals lets the copies exercise both lossless and lossy paths.
_ORIGINALS: tuple[tuple[str, str], ...] = (
    ("astronaut", "originals/astronaut.png"),
    ("chelsea", "originals/animals/chelsea.jpg"),
    ("coffee", "originals/coffee.jpg"),
    ("rocket", "originals/rocket.jpg"),
    ("immunohistochemistry", "originals/science/immunohistochemistry.png"),
    ("hubble_deep_field", "originals/science/hubble_deep_field.jpg"),
    ("coins", "originals/coins.png"),
    ("camera", "originals/camera.jpg"),
    ("moon", "originals/science/moon.png"),
    ("clock", "originals/clock.jpg"),
)

_TRUNCATED_PATH = "corrupt/truncated.jpg"
_TRUNCATED_SOURCE = "originals/coffee.jpg"
_NOT_AN_IMAGE_PATH = "corrupt/not_really.png"
# Plain text behind an image extension: discovery by extension picks it up, decoding must fail.
_NOT_AN_IMAGE_TEXT = b"This file only pretends to be a PNG; it holds plain text.\n"


def _load_rgb(name: str) -> Image.Image:
    """Load one `skimage.data` photo as an 8-bit RGB Pillow image.

    Args:
        name: loader function name in `skimage.data`, e.g. "astronaut".

    Returns:
        RGB image; gray photos are expanded to three identical channels so every original has the
        same mode as the embedders' input.
    """
    array = np.asarray(getattr(skdata, name)())
    if array.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name} is {array.dtype}, expected uint8")
    return Image.fromarray(array).convert("RGB")


def _save(image: Image.Image, path: Path, *, quality: int = JPEG_QUALITY, png_compress_level: int = 6) -> None:
    """Encode an image by its file extension with fixed, metadata-free settings.

    Args:
        image: image to write.
        path: destination; `.jpg`/`.jpeg` become JPEG, `.png` becomes PNG.
        quality: JPEG quality.
        png_compress_level: zlib level for PNG; varying it changes the bytes but never the pixels.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        # Pinned subsampling keeps the output independent of Pillow's quality-based default.
        image.save(path, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    elif suffix == ".png":
        image.save(path, format="PNG", compress_level=png_compress_level, optimize=False)
    else:
        raise ValueError(f"unsupported sample extension: {path.name}")


def _decode(path: Path) -> Image.Image:
    """Decode a file written earlier in this build, so derived copies start from the stored pixels.

    Deriving from the file rather than the in-memory array makes a JPEG original's copies carry
    its compression artefacts, as they would in a real photo library.
    """
    with Image.open(path) as image:
        return image.convert("RGB")


def _unchanged(image: Image.Image) -> Image.Image:
    """Keep the pixels as they are; only the encoding of the copy differs."""
    return image


def _resize_half(image: Image.Image) -> Image.Image:
    """Halve both sides (a quarter of the pixels)."""
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)


def _thumbnail(image: Image.Image) -> Image.Image:
    """Shrink so the longer side is 160 px, like a gallery preview."""
    scale = 160 / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _crop_90_percent(image: Image.Image) -> Image.Image:
    """Keep about 90 % of the area, off-centre, like a user trimming one corner.

    Each side keeps sqrt(0.9) of its length; the window is anchored a little away from the top-left
    so both the left/top and right/bottom edges lose something.
    """
    keep = 0.9**0.5
    width, height = round(image.width * keep), round(image.height * keep)
    left, top = round((image.width - width) * 0.3), round((image.height - height) * 0.7)
    return image.crop((left, top, left + width, top + height))


def _brighten(image: Image.Image) -> Image.Image:
    """Raise brightness by 10 %, a typical one-click edit."""
    return ImageEnhance.Brightness(image).enhance(1.1)


# (relation, original, copy path, transform or None for a byte copy, save options).
_DerivedSpec = tuple[str, str, str, Callable[[Image.Image], Image.Image] | None, dict]
_COPIES: tuple[_DerivedSpec, ...] = (
    (RELATION_EXACT_COPY, "originals/coffee.jpg", "copies/backup/coffee.jpg", None, {}),
    # Same base name as its original in another folder: a path-only dedup would miss it.
    (RELATION_EXACT_COPY, "originals/astronaut.png", "copies/backup/2019/astronaut.png", None, {}),
    # A different zlib level changes the bytes while the decoded pixels stay identical.
    (
        RELATION_PNG_REENCODE,
        "originals/astronaut.png",
        "copies/export/astronaut_reencoded.png",
        _unchanged,
        {"png_compress_level": 1},
    ),
    (
        RELATION_FORMAT_CHANGE,
        "originals/science/immunohistochemistry.png",
        "copies/export/immunohistochemistry.jpg",
        _unchanged,
        {},
    ),
    (
        RELATION_JPEG_RECOMPRESS,
        "originals/rocket.jpg",
        "copies/phone/rocket_q60.jpg",
        _unchanged,
        {"quality": RECOMPRESS_QUALITY},
    ),
    (RELATION_RESIZED, "originals/animals/chelsea.jpg", "copies/phone/chelsea_half.jpg", _resize_half, {}),
    (
        RELATION_THUMBNAIL,
        "originals/science/hubble_deep_field.jpg",
        "copies/thumbs/hubble_deep_field_thumb.jpg",
        _thumbnail,
        {"quality": THUMBNAIL_QUALITY},
    ),
    (RELATION_CROPPED, "originals/camera.jpg", "copies/edited/camera_crop.jpg", _crop_90_percent, {}),
    (RELATION_BRIGHTENED, "originals/coins.png", "copies/edited/coins_bright.png", _brighten, {}),
)


def _write_originals(root: Path) -> dict[str, dict]:
    """Write every original photo and return their manifest entries."""
    files = {}
    for name, relative in _ORIGINALS:
        _save(_load_rgb(name), root / relative)
        files[relative] = {"relation": RELATION_ORIGINAL, "original": None}
    return files


def _write_copies(root: Path) -> dict[str, dict]:
    """Write the planted duplicates, each derived from an original already on disk."""
    files = {}
    for relation, original, relative, transform, options in _COPIES:
        destination = root / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if transform is None:
            shutil.copyfile(root / original, destination)
        else:
            _save(transform(_decode(root / original)), destination, **options)
        files[relative] = {"relation": relation, "original": original}
    return files


def _write_corrupt(root: Path) -> dict[str, dict]:
    """Write files that look like images by name but cannot be decoded."""
    truncated = root / _TRUNCATED_PATH
    truncated.parent.mkdir(parents=True, exist_ok=True)
    source_bytes = (root / _TRUNCATED_SOURCE).read_bytes()
    # Half the bytes keeps a valid JPEG header, so the file is identified and fails only on load.
    truncated.write_bytes(source_bytes[: len(source_bytes) // 2])
    (root / _NOT_AN_IMAGE_PATH).write_bytes(_NOT_AN_IMAGE_TEXT)
    # `original` stays None: an undecodable file has no content to be a duplicate of.
    return {
        _TRUNCATED_PATH: {"relation": RELATION_TRUNCATED, "original": None},
        _NOT_AN_IMAGE_PATH: {"relation": RELATION_NOT_AN_IMAGE, "original": None},
    }


def build_sample_set(target_dir: str | os.PathLike) -> dict:
    """Write a small demo image folder built from real photos shipped in scikit-image.

    The folder holds distinct originals under `originals/`, planted duplicates of them under
    `copies/` (exact byte copies, a lossless PNG re-encode, a PNG-to-JPEG conversion, a JPEG
    re-compression, resized, thumbnail, cropped and brightened copies) and undecodable files under
    `corrupt/`. Files of an earlier sample are overwritten in place; other files are left alone.
    Calling it twice gives byte-identical files.

    Args:
        target_dir: folder to write into; created if missing.

    Returns:
        Manifest dict with keys:
            root: `target_dir` as a string.
            files: relative '/'-separated path -> {"relation": str, "original": relative path of
                the original it derives from, or None for originals and corrupt files}. Lists
                every file written, corrupt ones included.
            corrupt: relative paths of the files that cannot be decoded.
    """
    root = Path(target_dir)
    root.mkdir(parents=True, exist_ok=True)
    files = _write_originals(root)
    files.update(_write_copies(root))
    corrupt = _write_corrupt(root)
    files.update(corrupt)
    return {"root": str(root), "files": files, "corrupt": sorted(corrupt)}

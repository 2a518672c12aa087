"""Discovering, decoding and fingerprinting image files.

Everything here works on plain paths and returns plain values; nothing imports Dagster.

Over 400 lines: discovery, decoding and fingerprints share the same file-safety rules (root, limits, verified bytes).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageChops, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# What Pillow's decoders raise on malformed data (they are not consistent about it).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError)
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: beyond this a file is treated as a decompression bomb.


def _pillow_limits_for_this_tool() -> None:
    """Set Pillow's process-wide limits the way this tool decodes, when it first opens an image
    (not at import, so that importing a module of ours changes nothing for other code).

    Truncated files must fail loudly so that they land in `rejected` instead of being half-decoded.
    Pillow's own bomb guard (a warning at 89 MP, an error at 179 MP) would override the configurable
    `max_pixels`; `open_image` enforces that limit from the header before any pixel is decoded.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = None


def import_decoding_modules() -> None:
    """Import, in the calling thread, every module that decoding imports on first use, before
    decoding threads start: Pillow's format plugins, and what scipy and
    scikit-image import inside their functions, by describing one small turned image.

    Python's per-module import locks can deadlock when several threads import one package's
    modules for the first time at once: scipy raised `_DeadlockError` in a decoding thread and a
    run failed. Call it before starting threads that call `describe_image` or `load_rgb`.
    """
    Image.init()
    turned = Image.radial_gradient("L").convert("RGB").rotate(30, expand=True)  # black corners
    content_pixel_count(turned)
    dihedral_phashes(turned)


@dataclass(frozen=True)
class DiscoveredFile:
    """A file under the image root that has an image extension.

    Attributes:
        path: path relative to the image root, '/'-separated. A name that is not valid UTF-8 is
            shown with its undecodable bytes as `\\xNN` escapes (and rejected as `non_utf8_name`).
        rejection: why the file cannot be read at all (symlink escaping the root, ...), else None.
        detail: what was found, for the person fixing it (empty when there is no rejection).
    """

    path: str
    rejection: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class DecodedImage:
    """Facts about one successfully decoded image (pixels already EXIF-rotated and in RGB)."""

    width: int
    height: int
    pixel_hash: str
    content_pixels: int
    source_mode: str
    frames: int
    phashes: tuple[int, ...] = ()  # dihedral pHashes as signed int64 (Parquet has no list<uint64> ints > 2**63)
    edge_hash: tuple[int, ...] = ()  # `edge_hash_of_grid`'s words as signed int64, for the same reason
    # Degrees by which the image was turned on its canvas, read from its black corners
    # (`core.rotated_copies.turned_black_corners`); None for an image without them.
    turned_degrees: float | None = None


class FileChangedError(RuntimeError):
    """A file's bytes are no longer the ones catalogued (it was rewritten during the run)."""


class ImageRejected(ValueError):
    """A file that cannot be used as an image; `reason` is a short machine-readable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def image_id_for(relative_path: str) -> str:
    """Stable id of an image: a hash of its '/'-separated path relative to the image root."""
    return hashlib.sha1(relative_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def discover_image_files(
    image_root: str | os.PathLike, excluded_folders: Sequence[str | os.PathLike] = ()
) -> list[DiscoveredFile]:
    """List every file with an image extension under `image_root`, sorted by relative path.

    Directories are walked without following symlinks (no loops, no escapes). A symlinked file is
    kept only when its target resolves inside the root; otherwise it is returned with a rejection.
    A file whose path is not valid UTF-8 is returned with the rejection `non_utf8_name` (its path
    could not be written to the CSV / Parquet exports), and a folder that cannot be listed is
    returned as one entry (its path with a trailing `/`) with the rejection `unreadable_folder`,
    so that nothing under the root is skipped silently. `excluded_folders` (the tool's own output
    and state folders, when they lie under the root) are not walked: its exports and thumbnails
    are never taken for input.

    Raises:
        ValueError: when `image_root` is not an existing directory.
    """
    root = Path(image_root)
    if not root.is_dir():
        raise ValueError(
            f"image root {str(root)!r} is not an existing directory; pass the folder that holds the images"
        )
    resolved_root = root.resolve()
    found: list[DiscoveredFile] = []

    def unlistable(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        relative = printable_path(folder.relative_to(root).as_posix()) + "/"
        logger.warning("cannot list %s: %s; the folder is reported as rejected", folder, error)
        found.append(
            DiscoveredFile(relative, "unreadable_folder", f"{type(error).__name__}: {error.strerror or error}")
        )

    excluded = {Path(folder).resolve() for folder in excluded_folders}
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        dirnames[:] = sorted(
            name for name in dirnames if not excluded or (Path(dirpath) / name).resolve() not in excluded
        )
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            relative = PurePosixPath(full.relative_to(root).as_posix()).as_posix()
            shown = printable_path(relative)
            if shown != relative:
                found.append(
                    DiscoveredFile(
                        shown,
                        "non_utf8_name",
                        "the file name is not valid UTF-8; rename it (e.g. `convmv -f latin1 -t utf8`)",
                    )
                )
                continue
            rejection, detail = _rejection_for_entry(full, resolved_root)
            found.append(DiscoveredFile(relative, rejection, detail))
    return sorted(found, key=lambda f: f.path)


def printable_path(text: str) -> str:
    """`text` itself when it is valid UTF-8; else with its undecodable bytes as `\\xNN` escapes.

    `os.walk` and OS error messages carry the bytes of non-UTF-8 names as lone surrogates, which no
    UTF-8 writer (CSV, Parquet, LanceDB) accepts.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _rejection_for_entry(full: Path, resolved_root: Path) -> tuple[str | None, str]:
    """(rejection, detail) for one directory entry; (None, "") for a regular file inside the root."""
    try:
        if full.is_symlink():
            target = full.resolve(strict=False)
            if not target.is_relative_to(resolved_root):
                return (
                    "symlink_outside_root",
                    f"points to {printable_path(str(target))}, outside the image root; copy the file in instead",
                )
            if not target.exists():
                return "broken_symlink", f"points to {printable_path(str(target))}, which does not exist"
        mode = full.stat().st_mode
    except RuntimeError:  # symlink loop (raised by resolve)
        return "symlink_loop", "the symlink chain loops back on itself"
    except FileNotFoundError:
        return "disappeared", "removed while the folder was being listed"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink_loop", "the symlink chain loops back on itself"
        return "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return "not_a_regular_file", f"a {_file_kind(mode)}, not a file"
    return None, ""


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified_bytes(path: str | os.PathLike, expected_sha256: str) -> bytes:
    """The file's bytes, provided their SHA-256 is `expected_sha256`.

    Decoding from these bytes (not from the path again) guarantees that what is decoded is what
    was hashed, however the file changes afterwards.

    Raises:
        FileChangedError: the bytes differ from the catalogued ones.
        OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise FileChangedError(
            f"{path}: the file changed since it was catalogued (its SHA-256 is no longer {expected_sha256[:12]}…)"
        )
    return data


@dataclass(frozen=True)
class FileBytes:
    """A file's bytes, already read (and hashed), with the path they were read from."""

    path: str | os.PathLike
    data: bytes


ImageSource = str | os.PathLike | FileBytes


def _source_path(source: ImageSource):
    return source.path if isinstance(source, FileBytes) else source


def pixel_hash(rgb: Image.Image) -> str:
    """Hex SHA-256 of decoded RGB pixels plus width and height (SPEC.md's identity of content)."""
    if rgb.mode != "RGB":
        raise ValueError(f"pixel_hash expects an RGB image, got mode {rgb.mode!r}; decode with load_rgb first")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or losing transparency semantics.

    High bit-depth images are scaled down (a naive convert saturates 16-bit values to white);
    transparent pixels are composited over white so that equal visible content hashes equally.
    """
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min(initial=0)), float(values.max(initial=1))
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled * 255).astype(np.uint8), mode="L").convert("RGB")
    if mode in ("P", "RGB", "L") and "transparency" in image.info:  # palette entry or colour key
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def content_box(rgb: Image.Image, tolerance: int = 12) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of the content inside uniform borders.

    The border colour is taken from the top-left corner; rows and columns that differ from it by at
    most `tolerance` (per channel) are borders. A uniform image is all content.
    """
    corner = rgb.getpixel((0, 0))
    red, green, blue = ImageChops.difference(rgb, Image.new("RGB", rgb.size, corner)).split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)  # per-channel, not luminance
    return largest.point(lambda v: 255 if v > tolerance else 0).getbbox() or (0, 0, rgb.width, rgb.height)


def content_pixel_count(rgb: Image.Image, tolerance: int = 12) -> int:
    """Pixels inside `content_box`, so that a letterboxed copy does not outrank its original, less
    the black corners of a copy turned on its canvas (`core.rotated_copies`), so that neither
    does a turned one."""
    return content_and_turn(rgb, content_box(rgb, tolerance))[0]


def content_and_turn(rgb: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, float | None]:
    """(`content_pixel_count`, the angle in degrees by which the image was turned on its canvas, or
    None) for an image whose `content_box` is `box`. The corners are read from the content inside
    the box: a copy turned on a canvas grown to hold it loses only its 1-pixel sides to the
    trimming, a letterboxed one its bars, and a thin black frame is not taken for turned corners."""
    from imgdedup_pipeline.core.rotated_copies import turned_black_corners

    left, top, right, bottom = box
    inside = (right - left) * (bottom - top)
    turned = turned_black_corners(rgb if inside == rgb.width * rgb.height else rgb.crop(box))
    return (inside, None) if turned is None else (round(inside * (1.0 - turned[1])), turned[0])


def trim_uniform_borders(
    rgb: Image.Image, tolerance: int = 12, *, box: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """The image without its uniform (letterbox) borders; the image itself when it has none.
    `box`: the image's `content_box` at `tolerance`, when already computed."""
    box = content_box(rgb, tolerance) if box is None else box
    return rgb if box == (0, 0, rgb.width, rgb.height) else rgb.crop(box)


# The 8 rotations / flips of the square (dihedral group D4); identity first.
DIHEDRAL_TRANSPOSES = (
    None,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
PHASH_INPUT_SIDE = 32  # imagehash.phash's DCT input for a 64-bit hash
# Below this standard deviation (grey levels, 0-255) pHash's 32x32 grid is flat or nearly so (a
# solid colour, a blank frame, a 1x1 pixel): its hash is DCT rounding noise or quantisation
# ripple, not the picture (SPEC.md: a flat image's hash carries no information).
FLAT_GRID_MAX_GREY_STD = 2.0
# pHash sets a bit where a low-frequency DCT coefficient lies strictly above their median, so a
# picture with distinct coefficients has exactly 32 bits set; fewer means coefficients tied at the
# median (flat, 1-D ramps and bands: exact zeros). Two unrelated hashes with p set bits lie within
# the default 10 bits with probability ~2e-6 at p = 24 (8 variants both ways; 4e-7 at p = 32) but
# 1 % at p = 12 and 87 % at p = 8: below 24 a match says nothing about the picture.
MIN_INFORMATIVE_PHASH_BITS = 24


def phash_grid(rgb: Image.Image, *, box: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
    """pHash's 32x32 grey input of the border-trimmed image (uint8), or None when it is flat (grey
    standard deviation below FLAT_GRID_MAX_GREY_STD). `box`: the image's `content_box`, when
    already computed."""
    grid = (
        trim_uniform_borders(rgb, box=box)
        .convert("L")
        .resize((PHASH_INPUT_SIDE, PHASH_INPUT_SIDE), Image.Resampling.LANCZOS)
    )
    pixels = np.asarray(grid)
    return None if float(np.asarray(pixels, dtype=np.float64).std()) < FLAT_GRID_MAX_GREY_STD else pixels


def dihedral_phashes(rgb: Image.Image, *, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """64-bit pHashes (imagehash's `phash`) of the border-trimmed image under all 8 rotations / flips.

    The image is reduced once to pHash's 32x32 grey input (`phash_grid`) and the variants are exact
    transposes of that grid, so the min Hamming distance between one image's identity hash and
    another's 8 variants is a rotation/flip-invariant distance. A flat grid gets all-zero hashes,
    which `informative_phashes` rejects.
    Returns (8,) uint64, identity first.
    """
    return dihedral_phashes_of_grid(phash_grid(rgb, box=box))


def perceptual_hashes(
    rgb: Image.Image, *, box: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The image's (8,) uint64 `dihedral_phashes` and its (EDGE_HASH_WORDS,) `edge_hash_of_grid`,
    from one grid."""
    grid = phash_grid(rgb, box=box)
    return dihedral_phashes_of_grid(grid), edge_hash_of_grid(grid)


def dihedral_phashes_of_grid(grid: np.ndarray | None) -> np.ndarray:
    """`dihedral_phashes` of a `phash_grid` (all zeros for None, a flat image)."""
    if grid is None:
        return np.zeros(len(DIHEDRAL_TRANSPOSES), dtype=np.uint64)
    bits = _phash_bits(np.stack([transposed(grid) for transposed in _DIHEDRAL_ARRAY_VIEWS]))
    return np.packbits(bits.astype(np.uint8), axis=1).view(">u8").astype(np.uint64).ravel()


EDGE_HASH_SIDE = 16  # 16 x 16 blocks of 2 x 2 grid pixels
EDGE_HASH_WORDS = EDGE_HASH_SIDE**2 // 64  # 256 bits in four 64-bit words


def edge_hash_of_grid(grid: np.ndarray | None) -> np.ndarray:
    """Where a `phash_grid`'s edges are: its gradient magnitude averaged over 16 x 16 blocks, a bit
    set where a block lies above the blocks' median (row-major, first block in the top bit).
    Returns (EDGE_HASH_WORDS,) uint64; zeros for None (a flat image).

    pHash keeps only the lowest frequencies, so opposite quarters of a point-symmetric picture
    (a fundus photo, a colour wheel) match under a turn; their edges do not line up. A true turned
    copy's edges do, after the same turn (`dihedral_edge_hashes`), so the pHash signal lets a
    turned match count only where the edge hashes agree too (`core.distances`). The blocks tile
    the grid and the gradient magnitude does not change under a turn or a flip, so the hash of a
    turned grid is exactly the turned bit grid (tested).
    """
    if grid is None:
        return np.zeros(EDGE_HASH_WORDS, dtype=np.uint64)
    magnitude = np.hypot(*np.gradient(np.asarray(grid, dtype=np.float64)))
    block = PHASH_INPUT_SIDE // EDGE_HASH_SIDE
    blocks = magnitude.reshape(EDGE_HASH_SIDE, block, EDGE_HASH_SIDE, block).mean(axis=(1, 3))
    return _pack_bit_grids((blocks > np.median(blocks))[None])[0]


def dihedral_edge_hashes(edge_hashes: np.ndarray) -> np.ndarray:
    """(P, EDGE_HASH_WORDS) uint64 edge hashes (or int64 bit patterns) -> (P, 8, EDGE_HASH_WORDS):
    each one's hash of the image under the 8 rotations / flips, in `DIHEDRAL_TRANSPOSES` order:
    the bit grid turned as the image (`edge_hash_of_grid`), so variant v pairs with pHash variant v."""
    big_endian = np.ascontiguousarray(edge_hash_words(edge_hashes), dtype=">u8")
    grids = np.unpackbits(big_endian.view(np.uint8), axis=1)
    grids = grids.reshape(-1, EDGE_HASH_SIDE, EDGE_HASH_SIDE)
    turned = np.stack([view(grids) for view in _DIHEDRAL_BATCH_VIEWS], axis=1)  # (P, 8, side, side)
    return _pack_bit_grids(turned.reshape(-1, EDGE_HASH_SIDE, EDGE_HASH_SIDE)).reshape(
        len(grids), len(DIHEDRAL_TRANSPOSES), EDGE_HASH_WORDS
    )


def edge_hash_words(edge_hashes) -> np.ndarray:
    """(P, EDGE_HASH_WORDS) uint64 from edge hashes as uint64 words or int64 bit patterns (as the
    catalog stores them)."""
    words = np.asarray(edge_hashes)
    words = words.view(np.uint64) if words.dtype == np.int64 else words.astype(np.uint64)
    return words.reshape(-1, EDGE_HASH_WORDS)


def _pack_bit_grids(grids: np.ndarray) -> np.ndarray:
    """(P, side, side) bools -> (P, EDGE_HASH_WORDS) uint64, row-major, first cell in the top bit."""
    packed = np.packbits(grids.reshape(len(grids), EDGE_HASH_SIDE**2).astype(np.uint8), axis=1)
    return packed.view(">u8").astype(np.uint64)


# `DIHEDRAL_TRANSPOSES` as views of a (rows, columns) array, in the same order (tested equal).
_DIHEDRAL_ARRAY_VIEWS = (
    lambda a: a,
    lambda a: np.rot90(a, 1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3),
    lambda a: a[:, ::-1],
    lambda a: a[::-1, :],
    lambda a: a.T,
    lambda a: np.rot90(a, 2).T,
)


# The same views over the last two axes of a batch of grids (tested equal, view by view).
_DIHEDRAL_BATCH_VIEWS = (
    lambda a: a,
    lambda a: np.rot90(a, 1, axes=(-2, -1)),
    lambda a: np.rot90(a, 2, axes=(-2, -1)),
    lambda a: np.rot90(a, 3, axes=(-2, -1)),
    lambda a: a[..., :, ::-1],
    lambda a: a[..., ::-1, :],
    lambda a: np.swapaxes(a, -1, -2),
    lambda a: np.swapaxes(np.rot90(a, 2, axes=(-2, -1)), -1, -2),
)


def _phash_bits(grids: np.ndarray, hash_side: int = 8) -> np.ndarray:
    """imagehash's `phash` bits of each 32x32 grey grid in (M, 32, 32), in one batched DCT: the
    same transforms and median as calling it per grid (equal hashes, tested), without its Pillow
    round trip per grid (BENCHMARKS.md "Decode once": the catalog's per-file work, measured)."""
    import scipy.fftpack

    coefficients = scipy.fftpack.dct(scipy.fftpack.dct(grids, axis=1), axis=2)
    low = coefficients[:, :hash_side, :hash_side].reshape(len(grids), -1)
    return low > np.median(low, axis=1, keepdims=True)


def informative_phashes(hashes: np.ndarray) -> np.ndarray:
    """Which rows of dihedral pHashes carry information about the picture.

    A row counts when its identity hash has at least MIN_INFORMATIVE_PHASH_BITS bits set and as
    many clear: flat images (all-zero hashes from `dihedral_phashes`, or the near-constant hashes
    of catalogs written before that rule) and 1-D ramps fail it; a photo's hash (32 bits set)
    passes. The variants are transposes of the same grid: they share its tied coefficients.

    Args:
        hashes: (M, V) or (V,) uint64 (or int64 bit patterns).

    Returns:
        (M,) bool (a 0-d bool for one (V,) row).
    """
    hashes = np.asarray(hashes)
    identity = (hashes.view(np.uint64) if hashes.dtype == np.int64 else hashes.astype(np.uint64))[..., 0]
    set_bits = np.bitwise_count(identity).astype(np.int64)
    return np.minimum(set_bits, 64 - set_bits) >= MIN_INFORMATIVE_PHASH_BITS


def _reraise_io_error(exc: BaseException) -> None:
    """Re-raise operating-system errors (file gone, permission denied, I/O error: they carry an
    errno) so that callers can tell them from malformed data (Pillow's own OSErrors carry none)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        raise exc


def open_image(path: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image lazily (from a path or from the file's bytes already read), refusing decompression bombs
    before any pixel is decoded.

    Raises:
        ImageRejected: for empty, unidentifiable or oversized files.
        OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
    """
    if (len(path.data) if isinstance(path, FileBytes) else os.path.getsize(path)) == 0:
        raise ImageRejected("empty_file")
    _pillow_limits_for_this_tool()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(path.data) if isinstance(path, FileBytes) else path)
        except UnidentifiedImageError as exc:
            raise ImageRejected(
                "not_an_image", f"cannot identify image file {os.fspath(_source_path(path))!r}"
            ) from exc
        except DECODE_ERRORS as exc:  # e.g. a JPEG cut inside its header
            _reraise_io_error(exc)
            reason = "truncated" if "truncated" in str(exc).lower() else "decode_error"
            raise ImageRejected(reason, f"{type(exc).__name__}: {exc}") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", str(exc)) from exc
    if image.width * image.height > max_pixels:
        image.close()
        raise ImageRejected("too_many_pixels", f"{image.width}x{image.height} exceeds max_pixels={max_pixels}")
    return image


def load_rgb(
    path: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode an image file to an EXIF-oriented RGB image (first frame of animations).

    Args:
        path: the file, or its bytes already read (`FileBytes`).
        max_pixels: decoded-size limit; larger images are rejected (decompression bombs).
        draft_size: when set, JPEGs are decoded at a reduced scale of at least this size (fast
            path for embedding; never used for hashing).

    Raises:
        ImageRejected: the file cannot be decoded; `reason` says why.
        OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
    """
    image = open_image(path, max_pixels)
    try:
        with image, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return to_rgb(oriented)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from exc
    except DECODE_ERRORS as exc:
        _reraise_io_error(exc)
        message = str(exc)
        reason = "truncated" if "truncated" in message or isinstance(exc, EOFError) else "decode_error"
        raise ImageRejected(reason, f"{type(exc).__name__}: {message}") from exc


def load_verified_rgb(
    path: str | os.PathLike,
    expected_sha256: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """`load_rgb` of the file, decoded from bytes whose SHA-256 is `expected_sha256`.

    Raises:
        FileChangedError: the file's bytes are not the expected ones.
        ImageRejected, OSError: as `load_rgb`.
    """
    return load_rgb(FileBytes(path, read_verified_bytes(path, expected_sha256)), max_pixels, draft_size)


def describe_image(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, data: bytes | None = None
) -> DecodedImage:
    """Decode one file and return its size, pixel hash and content-pixel count.

    Args:
        path: the file.
        max_pixels: decoded-size limit.
        data: the file's bytes when already read (and hashed): decoded instead of reading `path`.

    Raises:
        ImageRejected: the file cannot be decoded.
        OSError: the file cannot be read (FileNotFoundError, PermissionError, ...).
    """
    source = path if data is None else FileBytes(path, data)
    with open_image(source, max_pixels) as probe:
        source_mode = probe.mode
        try:
            frames = getattr(probe, "n_frames", 1)  # walks the file: a truncated animation fails here
        except DECODE_ERRORS as exc:
            _reraise_io_error(exc)
            raise ImageRejected(
                "truncated" if "truncated" in str(exc) else "decode_error", f"{type(exc).__name__}: {exc}"
            ) from exc
    rgb = load_rgb(source, max_pixels)
    box = content_box(rgb)  # once: the content-pixel count and the pHashes both trim to it
    phashes, edge_hash = perceptual_hashes(rgb, box=box)
    content_pixels, turned_degrees = content_and_turn(rgb, box)
    return DecodedImage(
        width=rgb.width,
        height=rgb.height,
        pixel_hash=pixel_hash(rgb),
        content_pixels=content_pixels,
        source_mode=source_mode,
        frames=frames,
        phashes=tuple(phashes.view(np.int64).tolist()),
        edge_hash=tuple(edge_hash.view(np.int64).tolist()),
        turned_degrees=turned_degrees,
    )

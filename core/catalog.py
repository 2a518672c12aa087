"""Build the table of discovered images (and rejected files) for one image root.

Files whose path, size and mtime match the previous catalog are not decoded again, so a rerun on an
unchanged folder only lists and stats it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from imgdedup_pipeline.core.images import (
    DiscoveredFile,
    ImageRejected,
    describe_image,
    image_id_for,
    import_decoding_modules,
    printable_path,
)

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = [
    "image_id",
    "path",
    "bytes",
    "mtime_ns",
    "first_seen",
    "file_sha256",
    "width",
    "height",
    "content_pixels",
    "pixel_hash",
    "source_mode",
    "frames",
    "phashes",
    "edge_hash",
    "turned_degrees",
]
REJECTED_COLUMNS = ["image_id", "path", "bytes", "reason", "detail"]


def _describe_one(root: Path, discovered: DiscoveredFile, max_pixels: int) -> dict:
    """One catalog row: either an image row or a rejection row (key `reason`)."""
    base = {"image_id": image_id_for(discovered.path), "path": discovered.path}
    if discovered.rejection:
        return {**base, "bytes": None, "reason": discovered.rejection, "detail": discovered.detail[:500]}
    full = root / discovered.path
    try:
        # Discovery checked symlinks; a file swapped for one since then must not be read either.
        target = full.resolve()
        if not target.is_relative_to(root.resolve()):
            return {
                **base,
                "bytes": None,
                "reason": "symlink_outside_root",
                "detail": f"became a link to {target} after the folder was listed"[:500],
            }
    except RuntimeError as exc:  # a symlink loop (resolve raises it)
        return {**base, "bytes": None, "reason": "symlink_loop", "detail": str(exc)[:500]}
    except OSError:
        pass  # reported by the reads below
    try:
        stat = full.stat()
        # One read: the SHA-256 and the pixels come from the same bytes, so a file rewritten
        # meanwhile cannot pair one version's file hash with another's pixel hash.
        with open(full, "rb") as handle:
            data = handle.read()
        sha = hashlib.sha256(data).hexdigest()
        facts = describe_image(full, max_pixels, data=data)
    except ImageRejected as exc:
        return {**base, "bytes": _size_or_none(full), "reason": exc.reason, "detail": exc.detail[:500]}
    except FileNotFoundError as exc:
        return {**base, "bytes": None, "reason": "disappeared", "detail": str(exc)[:500]}
    except PermissionError as exc:
        return {**base, "bytes": _size_or_none(full), "reason": "unreadable", "detail": str(exc)[:500]}
    except OSError as exc:
        return {
            **base,
            "bytes": _size_or_none(full),
            "reason": "read_error",
            "detail": f"{type(exc).__name__}: {exc}"[:500],
        }
    return {
        **base,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        # The file's arrival time in the root: deterministic for a given set of files, so a full and
        # an incremental run agree on the `first_seen` tie-break.
        "first_seen": pd.Timestamp(stat.st_mtime_ns, unit="ns", tz="UTC"),
        "file_sha256": sha,
        "width": facts.width,
        "height": facts.height,
        "content_pixels": facts.content_pixels,
        "pixel_hash": facts.pixel_hash,
        "source_mode": facts.source_mode,
        "frames": facts.frames,
        "phashes": list(facts.phashes),
        "edge_hash": list(facts.edge_hash),
        "turned_degrees": facts.turned_degrees,  # None becomes NaN in the float column
    }


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def build_catalog(
    image_root: str | os.PathLike,
    discovered: list[DiscoveredFile],
    previous: pd.DataFrame | None = None,
    max_pixels: int = 100_000_000,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Describe every discovered file.

    Args:
        image_root: the root the relative paths are under.
        discovered: output of `discover_image_files`.
        previous: the image table of an earlier run; rows whose path, bytes and mtime_ns still match
            are reused without decoding.
        max_pixels: decompression-bomb limit.
        workers: decoding threads (Pillow and hashlib release the GIL).
        progress: called with (done, total) as files finish.

    Returns:
        (images, rejected): new DataFrames with IMAGE_COLUMNS and REJECTED_COLUMNS, sorted by path.
        Every discovered file is in exactly one of them.
    """
    root = Path(image_root)
    reusable = {}
    if previous is not None and len(previous) and set(IMAGE_COLUMNS) <= set(previous.columns):
        reusable = {row["path"]: row for row in previous[IMAGE_COLUMNS].to_dict("records")}
    rows, to_describe = [], []
    for item in discovered:
        old = reusable.get(item.path)
        if old is not None and item.rejection is None and _unchanged(root / item.path, old):
            rows.append(old)
        else:
            to_describe.append(item)
    logger.info("%d files unchanged since the last run, %d to decode", len(rows), len(to_describe))
    started = time.monotonic()
    if to_describe:  # no decoding threads start otherwise, and a rerun skips the imports
        import_decoding_modules()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, row in enumerate(pool.map(lambda d: _describe_one(root, d, max_pixels), to_describe), start=1):
            rows.append(row)
            if progress and (done % 200 == 0 or done == len(to_describe)):
                progress(done, len(to_describe))
    logger.info("decoded %d files in %.1f s", len(to_describe), time.monotonic() - started)
    images = pd.DataFrame([r for r in rows if "reason" not in r], columns=IMAGE_COLUMNS)
    rejected = pd.DataFrame([r for r in rows if "reason" in r], columns=REJECTED_COLUMNS)
    # Details quote OS messages with absolute paths, which may hold undecodable (non-UTF-8) bytes.
    rejected["detail"] = rejected["detail"].map(printable_path)
    for column in ("bytes", "mtime_ns", "width", "height", "content_pixels", "frames"):
        images[column] = images[column].astype("int64")
    images["turned_degrees"] = images["turned_degrees"].astype("float64")
    images["first_seen"] = pd.to_datetime(images["first_seen"], utc=True)
    rejected["bytes"] = rejected["bytes"].astype("Int64")
    return images.sort_values("path", ignore_index=True), rejected.sort_values("path", ignore_index=True)


def _unchanged(full: Path, old: dict) -> bool:
    try:
        stat = full.stat()
    except OSError:
        return False
    return stat.st_size == old["bytes"] and stat.st_mtime_ns == old["mtime_ns"]


def listing_fingerprint(image_root: str | os.PathLike, discovered: list[DiscoveredFile]) -> str:
    """A hash of (path, size, mtime) for every discovered file: changes whenever a file is added,
    removed or rewritten, without reading any file's contents."""
    root = Path(image_root)
    digest = hashlib.sha256()
    for item in sorted(discovered, key=lambda d: d.path):
        try:
            stat = (root / item.path).stat()
            digest.update(f"{item.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{item.path}\0unreadable\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def path_per_content(raw_images: pd.DataFrame) -> dict[str, str]:
    """pixel hash -> the file embedded for it (the first path), so every stage embeds the same pixels."""
    return raw_images.sort_values("path").drop_duplicates("pixel_hash").set_index("pixel_hash")["path"].to_dict()

"""Caches under `OUT/state` are disposable: one that cannot be read (truncated by a full disk,
garbage, an older format) is reported by name, removed, and its contents are computed again.
The vector table is not a cache and never goes through here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def read_or_discard(path: str | Path, read: Callable[[Path], T], warn: Callable[[str], None]) -> T | None:
    """`read(path)`, or None when the file is absent or unreadable; an unreadable one is removed
    after `warn` names it, so the caller recomputes (and rewrites) it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read(path)
    except FileNotFoundError:  # removed since it was listed (e.g. checkpoints cleared by another step)
        return None
    except Exception as exc:  # noqa: BLE001 (whatever the reader raises, the cache is not usable)
        warn(f"discarded the unreadable cache {path} ({type(exc).__name__}: {str(exc)[:200]}); it is computed again")
        path.unlink(missing_ok=True)
        return None


def inputs_digest(*parts) -> str:
    """SHA-256 (hex) of everything a cached result was computed from, for its cache key.

    Each part is None, a bool, int, float or str, bytes, a numpy array (its dtype and shape count,
    object arrays by their values' text) or a list / tuple of these; the type and length of each
    part count too, so that no two different inputs of one caller share a digest by
    concatenation.
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()

    def feed(part) -> None:
        if isinstance(part, np.ndarray):
            if part.dtype == object:
                feed(("object-array", part.shape, [str(value) for value in part.ravel()]))
            else:
                digest.update(f"array {part.dtype.str} {part.shape}|".encode())
                digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (list, tuple)):
            digest.update(f"seq {len(part)}|".encode())
            for item in part:
                feed(item)
        elif isinstance(part, bytes):
            digest.update(f"bytes {len(part)}|".encode())
            digest.update(part)
        elif part is None or isinstance(part, (bool, int, float, str)):
            text = repr(part)
            digest.update(f"{type(part).__name__} {len(text)}|{text}".encode())
        else:
            raise TypeError(
                f"inputs_digest takes None, bool, int, float, str, bytes, numpy arrays and lists of them, got {type(part).__name__}"
            )

    feed(list(parts))
    return digest.hexdigest()


def result_for_inputs(
    folder: str | Path,
    file_name: str,
    digest: str,
    compute: Callable[[], T],
    read: Callable[[Path], T],
    write: Callable[[T, str], object],
    warn: Callable[[str], None],
) -> tuple[T, bool]:
    """The result computed from the inputs whose `inputs_digest` is `digest`: read back from the
    file an earlier run stored it in, else `compute()`, stored for the next run (the results of
    `file_name` under other digests are removed: one per name).

    Args:
        folder: a disposable cache folder under `OUT/state`.
        file_name: what the result is, e.g. `clean_dataset_nearest.parquet`; stored as
            FOLDER/STEM-DIGEST.SUFFIX. No `-` in the stem.
        digest: `inputs_digest` of everything `compute` reads, a format version included.
        compute: builds the result.
        read: reads a stored result back (whatever it raises discards the file).
        write: `write(result, path)` stores a result exactly (written to a temporary file, then
            renamed into place).
        warn: told about a stored result that could not be read (it is removed and computed again).

    Returns:
        (result, reused): reused is True when the result was read back, not computed.
    """
    from imgdedup_pipeline.core.atomic_write import write_atomically

    stem, dot, suffix = file_name.partition(".")
    if "-" in stem:
        raise ValueError(f"a cached result's name must not contain '-' before its suffix, got {file_name!r}")
    folder = Path(folder)
    path = folder / f"{stem}-{digest}{dot}{suffix}"
    stored = read_or_discard(path, read, warn)
    if stored is not None:
        return stored, True
    result = compute()
    write_atomically(path, lambda temporary: write(result, temporary))
    for older in folder.glob(f"{stem}-*{dot}{suffix}"):
        if older != path:
            older.unlink(missing_ok=True)
    return result, False

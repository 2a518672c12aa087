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

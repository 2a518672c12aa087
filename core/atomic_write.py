"""The one way files are written here: into a temporary file beside the target, then renamed onto
it, so that a reader (or a run killed mid-write) never sees half a file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """`write(temporary path)`, then rename it onto `target`.

    The temporary name is unique (concurrent writers of one target never share it) and hidden
    (a leading dot: globs such as `batch-*.parquet` never see it). The file gets the usual
    permissions (0666 less the umask), as any file the user creates.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(str(temporary))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target

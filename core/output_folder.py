"""The output folder (`--out`) is the tool's own: it writes only into a folder it created or found
empty, marked by `OUT/.imgdedup-output`, and never through a symlink that leads out of it.

Anything else there (a user's `clean.csv`, a planted `state/thumbnails -> /elsewhere`) is a
configuration error found before any work, so nothing of the user's is overwritten and nothing is
written outside `--out`.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgdedup_pipeline.core.atomic_write import write_atomically

MARKER_NAME = ".imgdedup-output"
MARKER_TEXT = "This folder is written by imgdedup (exports and state); it may replace anything in it.\n"


def output_folder_problems(out_dir: str | os.PathLike) -> list[str]:
    """Why imgdedup must not write into `out_dir` (empty = it may): a non-empty folder without the
    marker, or a symlink under it whose target lies outside it. A missing folder is fine."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    if not (out / MARKER_NAME).is_file():
        entries = sorted(entry.name for entry in os.scandir(out))
        if entries:
            shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            return [
                f"output folder {str(out)!r} is not empty ({shown}) and was not created by imgdedup (no {MARKER_NAME} in it): "
                f"choose a new or empty --out; nothing of yours is overwritten"
            ]
    escaping = escaping_symlinks(out)
    if escaping:
        link, target = escaping[0]
        more = f" (and {len(escaping) - 1} more)" if len(escaping) > 1 else ""
        return [
            f"output folder {str(out)!r} holds a symlink {str(link)!r} to {str(target)!r}, outside it{more}: remove it; imgdedup writes only inside --out"
        ]
    return []


def escaping_symlinks(out_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(link, resolved target) for every symlink under `out_dir` that leads outside it (or loops).
    Links are not followed, so each is seen once; the walk's directory entries say which entries
    are links without another system call per file (the thumbnail cache may hold many)."""
    root = Path(out_dir).resolve()
    found = []
    folders = [Path(out_dir)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    path = Path(entry.path)
                    try:
                        target = path.resolve(strict=False)
                    except (RuntimeError, OSError):  # a loop
                        found.append((path, Path(os.readlink(path))))
                        continue
                    if not target.is_relative_to(root):
                        found.append((path, target))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
    return sorted(found)


def claim_output_folder(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` if needed and mark it as imgdedup's (idempotent).

    Raises:
        ValueError: `output_folder_problems` found a reason not to write there.
    """
    problems = output_folder_problems(out_dir)
    if problems:
        raise ValueError(problems[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_NAME
    if not marker.is_file():
        write_atomically(marker, lambda temporary: Path(temporary).write_text(MARKER_TEXT))
    return marker

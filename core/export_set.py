"""The exports of a run form one set, published all at once.

Each run writes its exports into `OUT/exports/<run id>/`. When the set is complete (the
clean_dataset step, the last of it), `manifest.json` naming the run and its files is written there
and the one pointer `OUT/exports/current` (a relative symlink) is switched to that folder by an
atomic rename. The top-level names readers use (`OUT/clean.csv`, `OUT/duplicates.csv`, ...) are
relative symlinks through that pointer, so every top-level file changes in the same instant: a
kill at any moment leaves the previous complete set or the new complete set, never a mix.
`training_manifest.csv` joins the published set when (and only if) the training gate lets it be
written; a set whose gate held it back has none (nor a top-level name), rather than an older run's.

The previous set is kept beside the current one (a reader may still be reading it); older
published sets are removed at the next publish. A folder without a manifest belongs to a run still
writing its set (another run on the same output folder) or to one killed before publishing; the
two look alike but for age, so it is removed only once untouched for UNPUBLISHED_GRACE_S.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from imgdedup_pipeline.core.atomic_write import write_atomically

EXPORTS_DIR = "exports"
CURRENT_LINK = "current"
MANIFEST_FILE = "manifest.json"
# Written before the set is published (each by its step); a name a run did not write (a run of a
# subset of the assets in the UI) is carried over from the current set.
SET_FILES = (
    "rejected.csv",
    "uniqueness.csv",
    "uniqueness.parquet",
    "duplicates.csv",
    "clean.csv",
    "clean.parquet",
    "report.html",
    "uniqueness_histogram.png",
)
# Written after the set is published, into it, when the training gate passes.
GATED_FILES = ("training_manifest.csv",)
UNPUBLISHED_GRACE_S = 24 * 3600


def run_folder(out_dir: str | os.PathLike, run_id: str) -> Path:
    if not run_id or "/" in run_id or run_id.startswith(".") or run_id == CURRENT_LINK:
        raise ValueError(f"not a run id: {run_id!r}")
    return Path(out_dir) / EXPORTS_DIR / run_id


def current_folder(out_dir: str | os.PathLike) -> Path | None:
    """The folder of the published set, or None before any set was published."""
    link = Path(out_dir) / EXPORTS_DIR / CURRENT_LINK
    if link.is_symlink():
        return link.parent / os.readlink(link)
    # A copy of the output folder made by following links (cp -rL, shutil.copytree) holds the set
    # itself here: it is still the published set.
    return link if link.is_dir() else None


def published_run_id(out_dir: str | os.PathLike) -> str | None:
    """The run whose set is published (from its manifest), or None when none is."""
    folder = current_folder(out_dir)
    try:
        return json.loads((folder / MANIFEST_FILE).read_text())["run_id"] if folder is not None else None
    except (OSError, ValueError, KeyError):
        return None


def publish(out_dir: str | os.PathLike, run_id: str) -> Path:
    """Complete the run's set (carrying over names it did not write), write its manifest, switch
    `exports/current` to it and point the top-level names through it; returns the set's folder.

    Raises:
        FileExistsError: a top-level export name is a folder (not something imgdedup wrote).
    """
    out = Path(out_dir)
    for name in (*SET_FILES, *GATED_FILES):  # before anything switches: all names, or none
        if (out / name).is_dir() and not (out / name).is_symlink():
            raise FileExistsError(f"{out / name} is a folder, not an export: move it out of the output folder")
    folder = run_folder(out, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    previous = current_folder(out)
    if previous is not None and previous.resolve() != folder.resolve():
        for name in SET_FILES:
            if not (folder / name).exists() and (previous / name).is_file():
                _link_or_copy(previous / name, folder / name)
    files = sorted(name for name in (*SET_FILES, *GATED_FILES) if (folder / name).is_file())
    manifest = {"run_id": run_id, "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    write_atomically(folder / MANIFEST_FILE, lambda path: Path(path).write_text(json.dumps(manifest, indent=2)))
    current = out / EXPORTS_DIR / CURRENT_LINK
    copied_set = None
    if current.is_dir() and not current.is_symlink():  # see current_folder: replaced by the pointer
        copied_set = current.with_name(f".replaced-{uuid.uuid4().hex[:12]}")
        os.rename(current, copied_set)
    _point(current, run_id)
    if copied_set is not None:
        shutil.rmtree(copied_set, ignore_errors=True)
    for name in (*SET_FILES, *GATED_FILES):
        if name in files:
            link_top_level(out, name)
        elif (out / name).is_symlink():  # not in this set (a held-back training manifest): no dangling link
            (out / name).unlink()
    _remove_old_sets(out, keep={run_id, previous.name if previous is not None else ""})
    return folder


def add_to_published_set(out_dir: str | os.PathLike, name: str, write: Callable[[str], None]) -> Path:
    """Write `name` (a GATED_FILES name) into the published set, and list it in its manifest."""
    out = Path(out_dir)
    folder = current_folder(out)
    if folder is None:
        raise RuntimeError(f"no export set is published in {out}: materialize clean_dataset first")
    target = write_atomically(folder / name, write)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"] = sorted({*manifest["files"], name})
    write_atomically(folder / MANIFEST_FILE, lambda path: Path(path).write_text(json.dumps(manifest, indent=2)))
    link_top_level(out, name)
    return target


def link_top_level(out_dir: str | os.PathLike, name: str) -> Path:
    """`OUT/name` -> `exports/current/name` (replacing, atomically, a regular file an earlier
    version of imgdedup wrote there)."""
    top = Path(out_dir) / name
    wanted = f"{EXPORTS_DIR}/{CURRENT_LINK}/{name}"
    if top.is_symlink() and os.readlink(top) == wanted:
        return top
    if top.is_dir() and not top.is_symlink():
        raise FileExistsError(f"{top} is a folder, not an export: move it out of the output folder")
    _point(top, wanted)
    return top


def _point(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` by one rename (never absent in between)."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:12]}.link")
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    finally:
        if temporary.is_symlink():
            temporary.unlink()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _remove_old_sets(out: Path, keep: set[str]) -> None:
    for entry in (out / EXPORTS_DIR).iterdir():
        if (
            entry.name not in keep
            and entry.name != CURRENT_LINK
            and not entry.name.startswith(".")
            and entry.is_dir()
            and not entry.is_symlink()
            and (
                (entry / MANIFEST_FILE).exists() or is_abandoned([p.stat().st_mtime for p in (entry, *entry.iterdir())])
            )
        ):
            shutil.rmtree(entry, ignore_errors=True)


def is_abandoned(modified_times: list[float]) -> bool:
    """Whether an unpublished set whose files were last modified at these times is one no run is
    still writing."""
    return time.time() - max(modified_times) > UNPUBLISHED_GRACE_S

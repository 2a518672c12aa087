"""The export set (core/export_set.py) on object storage, where there are no symlinks to switch.

Each run writes its exports under `exports/<run id>/`, as on disk. Publishing writes the set's
`manifest.json` and then `exports/current.json`, a copy of it: that one PUT switches readers from
the previous complete set to the new complete set (S3 shows an object whole or not at all), so a
kill at any moment leaves one set or the other, never a mix. Readers (and `published_export`)
read `exports/current.json` first, then the files of the run it names; there are no top-level
names (`clean.csv`, ...) on object storage. Names a run did not write are copied over from the
previous set; the previous set is kept, older ones are deleted at the next publish (unpublished
ones only when abandoned, as on disk).
"""

from __future__ import annotations

import json
import time

from imgdedup_pipeline.core.export_set import EXPORTS_DIR, GATED_FILES, MANIFEST_FILE, SET_FILES, is_abandoned
from imgdedup_pipeline.core.object_store import ObjectFolder

CURRENT_POINTER = "current.json"


def run_prefix(run_id: str) -> str:
    if not run_id or "/" in run_id or run_id.startswith(".") or run_id == CURRENT_POINTER:
        raise ValueError(f"not a run id: {run_id!r}")
    return f"{EXPORTS_DIR}/{run_id}"


def write_export(root: ObjectFolder, run_id: str, name: str, data: bytes) -> str:
    """Put one export of run `run_id`'s set; returns its URI."""
    return root.put(f"{run_prefix(run_id)}/{name}", data)


def published_manifest(root: ObjectFolder) -> dict | None:
    """The manifest of the published set (`run_id`, `files`), or None before any was published."""
    data = root.get(f"{EXPORTS_DIR}/{CURRENT_POINTER}")
    return json.loads(data) if data is not None else None


def published_export(root: ObjectFolder, name: str) -> bytes | None:
    """A file of the published set, or None when the set has no such file (or none is published)."""
    manifest = published_manifest(root)
    if manifest is None or name not in manifest["files"]:
        return None
    return root.get(f"{run_prefix(manifest['run_id'])}/{name}")


def publish(root: ObjectFolder, run_id: str) -> str:
    """Complete run `run_id`'s set (copying over names it did not write), write its manifest and
    switch `exports/current.json` to it; returns the set's URI."""
    prefix = run_prefix(run_id)
    previous = published_manifest(root)
    written = {name.removeprefix(prefix + "/") for name in root.names(prefix + "/")}
    if previous is not None and previous["run_id"] != run_id:
        for name in SET_FILES:
            if name not in written and name in previous["files"]:
                root.copy(f"{run_prefix(previous['run_id'])}/{name}", f"{prefix}/{name}")
                written.add(name)
    manifest = {
        "run_id": run_id,
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": sorted(name for name in (*SET_FILES, *GATED_FILES) if name in written),
    }
    _write_manifest(root, manifest)
    _delete_old_sets(root, keep={run_id, previous["run_id"] if previous is not None else ""})
    return root.uri(prefix)


def add_to_published_set(root: ObjectFolder, name: str, data: bytes) -> str:
    """Put `name` (a GATED_FILES name) into the published set and list it in its manifest."""
    manifest = published_manifest(root)
    if manifest is None:
        raise RuntimeError(f"no export set is published in {root.uri()}: materialize clean_dataset first")
    uri = write_export(root, manifest["run_id"], name, data)
    _write_manifest(root, {**manifest, "files": sorted({*manifest["files"], name})})
    return uri


def _delete_old_sets(root: ObjectFolder, keep: set[str]) -> None:
    """Older published sets, and unpublished ones no run is still writing (`is_abandoned`)."""
    sets: dict[str, dict[str, float]] = {}
    for name, modified in root.modified_times(EXPORTS_DIR + "/").items():
        if name.count("/") >= 2 and (run_id := name.split("/")[1]) not in keep:
            sets.setdefault(run_id, {})[name] = modified
    for objects in sets.values():
        if any(name.endswith("/" + MANIFEST_FILE) for name in objects) or is_abandoned(list(objects.values())):
            root.delete(objects)


def _write_manifest(root: ObjectFolder, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2).encode()
    root.put(f"{run_prefix(manifest['run_id'])}/{MANIFEST_FILE}", text)
    root.put(f"{EXPORTS_DIR}/{CURRENT_POINTER}", text)  # the switch: one PUT, after the set is complete

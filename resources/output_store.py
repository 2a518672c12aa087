"""The output folder: exports people open (CSV / Parquet) and the pipeline's own state."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from imgdedup_pipeline.core.settings import setting

if TYPE_CHECKING:
    from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint
    from imgdedup_pipeline.core.object_store import ObjectFolder


class OutputStoreResource(dg.ConfigurableResource):
    """Where exports are written (`out_dir`) and where run state lives (`out_dir/state`).

    With `shared_storage_uri`, what another process needs goes there instead (the export sets,
    core/shared_exports.py, and the embedding checkpoints); `out_dir` keeps this process's
    disposable caches and the image catalog (deploy/README.md, "What a worker shares").

    Attributes:
        out_dir: see `core.settings.Settings`: uniqueness.csv, duplicates.csv, clean.csv/.parquet,
            rejected.csv and the state folder.
        report_base_url: see `Settings` (scripts/ui.sh starts the server); empty = no link
            (browsers refuse `file://` links).
        shared_storage_uri: see `Settings`; None = everything under `out_dir`.
    """

    out_dir: str = setting("out_dir", default=...)
    report_base_url: str = setting("report_base_url", default="")
    shared_storage_uri: str | None = setting("shared_storage_uri")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before a run writes anything: the folder must be new, empty or imgdedup's own (marked),
        with no symlink leading out of it (`core.output_folder`); it is then marked as ours."""
        from imgdedup_pipeline.core.output_folder import claim_output_folder

        try:
            claim_output_folder(self.out_dir)
        except ValueError as exc:
            raise dg.Failure(description=f"config error: {exc}") from None

    @property
    def shared(self) -> ObjectFolder | None:
        """The object storage every worker shares, or None when everything is under `out_dir`."""
        from imgdedup_pipeline.core.object_store import folder_at

        return folder_at(self.shared_storage_uri) if self.shared_storage_uri else None

    @property
    def root(self) -> Path:
        return Path(self.out_dir)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def figures_dir(self) -> Path:
        """Disposable cache of figures drawn by an earlier run (`core.plots.cached_uniqueness_histogram`)."""
        return self.state_dir / "figures"

    def neighbor_search_cache(self, table_name: str) -> Path:
        """The last run's embedding search over vector table `table_name` (`core.search.cache.SearchCache`)."""
        return self.state_dir / "neighbor-searches" / f"{table_name}-embedding.npz"

    def embedding_checkpoint(self, table_name: str, warn: Callable[[str], None] | None = None) -> EmbeddingCheckpoint:
        """Embeddings for vector table `table_name`, checkpointed before they reach it; `warn` (the
        step's log) names a damaged shard that is discarded."""
        from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint, ObjectStoreCheckpoint

        if (shared := self.shared) is not None:
            folder = shared.child("state", "embedding-checkpoints", table_name)
            return ObjectStoreCheckpoint(folder, warn) if warn is not None else ObjectStoreCheckpoint(folder)
        directory = self.state_dir / "embedding-checkpoints" / table_name
        return EmbeddingCheckpoint(directory, warn) if warn is not None else EmbeddingCheckpoint(directory)

    def report_url(self, report: Path) -> str | None:
        """The http link to an exported report, or None without a report server."""
        from imgdedup_pipeline.core.report_server import report_url

        return report_url(self.report_base_url, report) if self.report_base_url else None

    def catalog_name(self, image_root: Path) -> str:
        """File name (in `state_dir`) of the image catalog for one image root."""
        return f"catalog-{hashlib.sha1(str(Path(image_root).resolve()).encode()).hexdigest()[:12]}.parquet"

    def read_catalog(self, image_root: Path, warn: Callable[[str], None]) -> pd.DataFrame | None:
        """The last catalog of `image_root` (on the shared storage when there is one, so any worker
        skips decoding unchanged files), or None; an unreadable one is named through `warn` and
        discarded (it only saves decoding)."""
        from imgdedup_pipeline.core.disposable_cache import read_or_discard

        name = self.catalog_name(image_root)
        if (shared := self.shared) is not None:
            return shared.read_or_discard(f"state/{name}", pd.read_parquet, warn)
        return read_or_discard(self.state_dir / name, pd.read_parquet, warn)

    def write_catalog(self, image_root: Path, images: pd.DataFrame) -> Path | str:
        name = self.catalog_name(image_root)
        if (shared := self.shared) is not None:
            return shared.put(f"state/{name}", _table_bytes(name, images))
        return self.write_table(f"state/{name}", images)

    def write_json(self, file_name: str, payload: dict) -> Path:
        from imgdedup_pipeline.core.atomic_write import write_atomically

        text = json.dumps(payload, indent=2, default=str)
        return write_atomically(self.path_for(file_name), lambda temporary: Path(temporary).write_text(text))

    def path_for(self, file_name: str) -> Path:
        """A path inside `out_dir`; refuses names that would escape it."""
        root = self.root.resolve()
        target = (root / file_name).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"export name {file_name!r} would be written outside {root}")
        return target

    def export_path(self, run_id: str, file_name: str) -> Path:
        """Where run `run_id` writes an export: its own folder, published as a set (core/export_set.py)."""
        from imgdedup_pipeline.core.export_set import EXPORTS_DIR

        return self.path_for(f"{EXPORTS_DIR}/{run_id}/{file_name}")

    def write_table(self, file_name: str, table: pd.DataFrame, run_id: str | None = None) -> Path | str:
        """Write CSV or Parquet (by suffix) atomically: a reader never sees a half-written file.
        With `run_id`, into that run's export set (`export_path`, or on the shared storage: its
        URI is returned), else at `file_name` in out_dir."""
        from imgdedup_pipeline.core.atomic_write import write_atomically

        if run_id and self.shared is not None:
            return self.write_export_bytes(file_name, _table_bytes(file_name, table), run_id)
        target = self.export_path(run_id, file_name) if run_id else self.path_for(file_name)
        if target.suffix == ".parquet":
            return write_atomically(target, lambda path: table.to_parquet(path, index=False))
        return write_atomically(target, lambda path: table.to_csv(path, index=False))

    def write_export_bytes(self, file_name: str, data: bytes, run_id: str | None = None) -> Path | str:
        """Write `data` as export `file_name` atomically (with `run_id`: into that run's export set,
        on the shared storage when there is one); returns its path or URI."""
        from imgdedup_pipeline.core.atomic_write import write_atomically

        if run_id and (shared := self.shared) is not None:
            from imgdedup_pipeline.core.shared_exports import write_export

            return write_export(shared, run_id, file_name, data)
        target = self.export_path(run_id, file_name) if run_id else self.path_for(file_name)
        return write_atomically(target, lambda path: Path(path).write_bytes(data))

    def add_to_published_set(self, file_name: str, table: pd.DataFrame) -> Path | str:
        """Write a CSV into the published export set (`core.export_set.GATED_FILES`); returns its
        top-level path (on the shared storage: its URI)."""
        from imgdedup_pipeline.core.export_set import add_to_published_set

        if (shared := self.shared) is not None:
            from imgdedup_pipeline.core import shared_exports

            return shared_exports.add_to_published_set(shared, file_name, _table_bytes(file_name, table))
        add_to_published_set(self.root, file_name, lambda path: table.to_csv(path, index=False))
        return self.root / file_name

    def publish_exports(self, run_id: str) -> Path | str:
        """Publish run `run_id`'s export set: every top-level export switches to it at once (on the
        shared storage: `exports/current.json` names it)."""
        from imgdedup_pipeline.core.export_set import publish

        if (shared := self.shared) is not None:
            from imgdedup_pipeline.core import shared_exports

            return shared_exports.publish(shared, run_id)
        return publish(self.root, run_id)


def _table_bytes(file_name: str, table: pd.DataFrame) -> bytes:
    """The file `write_table` writes, in memory: Parquet or CSV by suffix."""
    if file_name.endswith(".parquet"):
        sink = io.BytesIO()
        table.to_parquet(sink, index=False)
        return sink.getvalue()
    return table.to_csv(index=False).encode()

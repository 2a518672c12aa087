"""The output folder: exports people open (CSV / Parquet) and the pipeline's own state."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from imgdedup_pipeline.core.settings import setting

if TYPE_CHECKING:
    from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint


class OutputStoreResource(dg.ConfigurableResource):
    """Where exports are written (`out_dir`) and where run state lives (`out_dir/state`).

    Attributes:
        out_dir: see `core.settings.Settings`: uniqueness.csv, duplicates.csv, clean.csv/.parquet,
            rejected.csv and the state folder.
        report_base_url: see `Settings` (scripts/ui.sh starts the server); empty = no link
            (browsers refuse `file://` links).
    """

    out_dir: str = setting("out_dir", default=...)
    report_base_url: str = setting("report_base_url", default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before a run writes anything: the folder must be new, empty or imgdedup's own (marked),
        with no symlink leading out of it (`core.output_folder`); it is then marked as ours."""
        from imgdedup_pipeline.core.output_folder import claim_output_folder

        try:
            claim_output_folder(self.out_dir)
        except ValueError as exc:
            raise dg.Failure(description=f"config error: {exc}") from None

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
        from imgdedup_pipeline.core.checkpoints import EmbeddingCheckpoint

        directory = self.state_dir / "embedding-checkpoints" / table_name
        return EmbeddingCheckpoint(directory, warn) if warn is not None else EmbeddingCheckpoint(directory)

    def report_url(self, report: Path) -> str | None:
        """The http link to an exported report, or None without a report server."""
        from imgdedup_pipeline.core.report_server import report_url

        return report_url(self.report_base_url, report) if self.report_base_url else None

    def catalog_name(self, image_root: Path) -> str:
        """File name (in `state_dir`) of the image catalog for one image root."""
        return f"catalog-{hashlib.sha1(str(Path(image_root).resolve()).encode()).hexdigest()[:12]}.parquet"

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

    def write_table(self, file_name: str, table: pd.DataFrame, run_id: str | None = None) -> Path:
        """Write CSV or Parquet (by suffix) atomically: a reader never sees a half-written file.
        With `run_id`, into that run's export set (`export_path`), else at `file_name` in out_dir."""
        from imgdedup_pipeline.core.atomic_write import write_atomically

        target = self.export_path(run_id, file_name) if run_id else self.path_for(file_name)
        if target.suffix == ".parquet":
            return write_atomically(target, lambda path: table.to_parquet(path, index=False))
        return write_atomically(target, lambda path: table.to_csv(path, index=False))

    def add_to_published_set(self, file_name: str, table: pd.DataFrame) -> Path:
        """Write a CSV into the published export set (`core.export_set.GATED_FILES`); returns its
        top-level path."""
        from imgdedup_pipeline.core.export_set import add_to_published_set

        add_to_published_set(self.root, file_name, lambda path: table.to_csv(path, index=False))
        return self.root / file_name

    def publish_exports(self, run_id: str) -> Path:
        """Publish run `run_id`'s export set: every top-level export switches to it at once."""
        from imgdedup_pipeline.core.export_set import publish

        return publish(self.root, run_id)

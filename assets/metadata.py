"""Metadata every asset attaches (row count, column schema, a short preview) and the files the
UI links to (figures, the HTML report) written into the output folder."""

import base64
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from imgdedup_pipeline.core.ui_markdown import markdown_table
from imgdedup_pipeline.resources.output_store import OutputStoreResource


def _column_type(column: pd.Series) -> str:
    """The dtype's name; for object columns holding arrays (embeddings), `array<dtype>[dim]`."""
    if column.dtype == object and len(column):
        first = column.dropna().iloc[0] if column.notna().any() else None
        if isinstance(first, np.ndarray):
            return f"array<{first.dtype}>[{first.shape[0] if first.ndim == 1 else 'x'.join(map(str, first.shape))}]"
    return str(column.dtype)


def column_schema(table: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=_column_type(table[c])) for c in table.columns])


def table_metadata(table: pd.DataFrame, preview_rows: int = 10, **extra) -> dict:
    """`dagster/row_count`, `dagster/column_schema` and a markdown preview, plus `extra`."""
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(len(table)),
        "dagster/column_schema": column_schema(table),
    }
    if len(table) and preview_rows:
        shown = table.head(preview_rows).drop(columns=[c for c in ("vector",) if c in table.columns])
        # Every cell escaped: a file name must not add an image, link, HTML or table cell in the UI.
        metadata["preview"] = dg.MetadataValue.md(markdown_table(shown))
    metadata.update(extra)
    return metadata


def write_export_file(
    output_store: OutputStoreResource, file_name: str, data: bytes, run_id: str | None = None
) -> Path | str:
    """Write `data` to `out_dir/file_name` (with `run_id`: into that run's export set, on the
    shared storage when there is one) atomically: a browser never sees half a file."""
    return output_store.write_export_bytes(file_name, data, run_id)


def png_markdown(png: bytes, alt: str, caption: str = "") -> dg.MetadataValue:
    """A PNG inlined as a base64 data URI in markdown; the Dagster UI renders `data:` images."""
    image = f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    return dg.MetadataValue.md(f"{image}\n\n{caption}" if caption else image)

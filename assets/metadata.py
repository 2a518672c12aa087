"""Metadata every asset attaches: row count, column schema and a short preview."""

import dagster as dg
import pandas as pd


def column_schema(table: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in table.dtypes.items()])


def table_metadata(table: pd.DataFrame, preview_rows: int = 10, **extra) -> dict:
    """`dagster/row_count`, `dagster/column_schema` and a markdown preview, plus `extra`."""
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(len(table)),
        "dagster/column_schema": column_schema(table),
    }
    if len(table) and preview_rows:
        shown = table.head(preview_rows).drop(columns=[c for c in ("vector",) if c in table.columns])
        metadata["preview"] = dg.MetadataValue.md(shown.to_markdown(index=False))  # tabulate ships with dagster
    metadata.update(extra)
    return metadata

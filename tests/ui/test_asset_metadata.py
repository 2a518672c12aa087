"""What the Dagster UI shows for each asset after a real run: row counts, schemas, the histogram,
the lowest scores with the thresholds in force, and the link to the duplicates report."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dagster as dg
from PIL import Image

from imgdedup_pipeline.definitions import ALL_ASSETS


def materializations(result) -> dict[str, dict]:
    events = result.get_asset_materialization_events()
    return {e.asset_key.to_user_string(): dict(e.materialization.metadata) for e in events}


def test_every_asset_has_row_count_and_column_schema(ui_run):
    _, result = ui_run
    assert result.success
    metadata = materializations(result)
    every_asset = {key.to_user_string() for assets in ALL_ASSETS for key in assets.keys}
    assert set(metadata) == every_asset
    for name, entries in metadata.items():
        assert isinstance(entries["dagster/row_count"].value, int), name
        schema = entries["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema) and schema.columns, name


def test_vector_table_records_its_lancedb_version(ui_run):
    _, result = ui_run
    vectors = materializations(result)["image_vectors"]
    assert vectors["lancedb/table_version"].value >= 1
    assert vectors["dagster/row_count"].value > 0
    embeddings = materializations(result)["image_embeddings"]
    types = {c.name: c.type for c in embeddings["dagster/column_schema"].value.columns}
    assert re.fullmatch(r"array<float32>\[\d+\]", types["vector"])


def test_uniqueness_scores_show_histogram_counts_and_thresholds(ui_run):
    settings, result = ui_run
    scores = materializations(result)["uniqueness_scores"]
    counts = scores["label_counts"].value
    assert sum(counts.values()) == scores["dagster/row_count"].value
    assert {label: scores[f"{label}_count"].value for label in counts} == counts

    markdown = scores["uniqueness_histogram"].value
    match = re.match(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, "the histogram must be an inline data: image, which the Dagster UI renders"
    inline = base64.b64decode(match.group(1))
    written = Path(scores["uniqueness_histogram_png"].value)
    assert written.parent == Path(settings.out_dir) and written.read_bytes() == inline
    with Image.open(written) as image:
        assert image.format == "PNG" and image.width >= 600

    in_force = f"`duplicate` uniqueness ≤ {settings.duplicate_threshold:g} < `near_duplicate` ≤ {settings.thresholds.near_duplicate:g}"
    assert in_force in markdown
    assert in_force in scores["lowest_scores"].value
    assert "| path" in scores["lowest_scores"].value


def test_duplicates_collection_links_the_report(ui_run):
    settings, result = ui_run
    duplicates = materializations(result)["duplicates_collection"]
    report = Path(duplicates["report"].value)
    assert report == Path(settings.out_dir).resolve() / "report.html" and report.is_file()
    # No report server configured: no link (a file:// link does not open from the UI), the path.
    assert "report_url" not in duplicates
    assert duplicates["report_groups"].value == 4
    assert duplicates["thumbnail_errors"].value == {}
    page = report.read_text(encoding="utf-8")
    # Self-contained: nothing is fetched from anywhere (the CSP forbids it, too).
    assert not re.search(r"""(src|href)=["'](https?:|//)""", page)
    assert "default-src 'none'" in page


def test_duplicates_collection_shows_groups_side_by_side(ui_run):
    _, result = ui_run
    preview = materializations(result)["duplicates_collection"]["duplicate_groups_preview"].value
    # Every planted group, each with inline thumbnails (keeper first) and its decisions.
    assert preview.count("**keep**") == 4 and preview.count("](data:image/jpeg;base64,") >= 8
    assert preview.index("![keeper]") < preview.index("![remove]")


def test_label_histogram_is_short_enough_to_show_in_place(ui_run):
    _, result = ui_run
    histogram = materializations(result)["uniqueness_scores"]["label_histogram"].value
    assert len(histogram) < 1000 and "█" in histogram

"""Stage 5: duplicate / near-duplicate groups by leader assignment, and the Duplicates collection."""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from PIL import Image

from imgdedup_pipeline.assets.metadata import table_metadata, write_export_file
from imgdedup_pipeline.core.atomic_write import write_atomically
from imgdedup_pipeline.core.collections import duplicates_table, interchange_table
from imgdedup_pipeline.core.grouping import assign_groups
from imgdedup_pipeline.core.report import (
    THUMBNAIL_SIZE,
    DuplicatesReport,
    ReportGroup,
    render_duplicates_report,
    report_groups,
    thumbnail_jpeg,
)
from imgdedup_pipeline.core.scoring import Thresholds
from imgdedup_pipeline.core.ui_markdown import duplicate_groups_markdown
from imgdedup_pipeline.core.uniqueness import ranking_of
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource

REPORT_FILE = "report.html"
# Thumbnails are inlined, about 5 KB each: beyond this many groups the page would get unwieldy.
REPORT_MAX_GROUPS = 500
# Members shown per group (keeper first); the group says how many more it has.
REPORT_MAX_MEMBERS = 50
# Groups shown side by side in the UI's metadata (inline thumbnails); the rest are in report.html.
UI_PREVIEW_GROUPS = 8
UI_THUMBNAIL_SIZE = 96


def cached_thumbnails(
    raw_images: pd.DataFrame, image_store: ImageStoreResource, output_store: OutputStoreResource
) -> Callable[[str], bytes]:
    """path -> report thumbnail (JPEG bytes), cached by content under OUT/state/thumbnails, so a
    rerun only decodes images it has not shown before; JPEGs are decoded at a reduced scale
    (draft), then shrunk to the thumbnail size. Thread-safe: the report makes them in threads,
    and two paths of one content each write the cache file atomically."""
    Image.init()  # Pillow's format plugins, imported here rather than first by two threads at once
    pixel_hash_of = dict(zip(raw_images["path"], raw_images["pixel_hash"]))
    cache = output_store.state_dir / "thumbnails"

    def thumbnail(path: str) -> bytes:
        cached = cache / f"{pixel_hash_of[path]}-{THUMBNAIL_SIZE}.jpg"
        if cached.is_file():
            return cached.read_bytes()
        data = thumbnail_jpeg(image_store.load_rgb(path, (2 * THUMBNAIL_SIZE, 2 * THUMBNAIL_SIZE)))
        write_atomically(cached, lambda temporary: Path(temporary).write_bytes(data))
        return data

    return thumbnail


def write_duplicates_report(
    groups: list[ReportGroup],
    thumbnail: Callable[[str], bytes],
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
    run_id: str,
    thresholds: Thresholds,
) -> DuplicatesReport:
    """Render `groups`, labelled with `thresholds`, as `report.html` of run `run_id`'s export set."""
    report = render_duplicates_report(
        groups,
        thumbnail,
        thresholds,
        settings={"keep policy": policy.keep_policy, "near-duplicate action": policy.near_duplicate_action},
        max_groups=REPORT_MAX_GROUPS,
        max_members=REPORT_MAX_MEMBERS,
    )
    # Paths that are not valid UTF-8 (surrogate escapes) are written as visible \udcxx escapes.
    write_export_file(output_store, REPORT_FILE, report.html.encode("utf-8", "backslashreplace"), run_id=run_id)
    return report


@dg.multi_asset(
    outs={
        "duplicate_groups": dg.AssetOut(
            description="Every scored image with its group, keeper and removal decision (SPEC.md interchange columns first)."
        ),
        "duplicates_collection": dg.AssetOut(
            description="Images removed as duplicates, each naming its keeper (duplicate_of) and the reason."
        ),
    },
    group_name="dedup",
)
def collect_duplicates(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    uniqueness_scores: pd.DataFrame,
    near_duplicate_pairs: pd.DataFrame,
    image_vectors: dict,
    image_store: ImageStoreResource,
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
):
    # The thresholds scoring used: those in force for the model of the vectors.
    thresholds = policy.thresholds_in_force(image_vectors["model_id"]).thresholds
    # The ranking and review pins scoring used (read once per run), so the group's keeper is the score's.
    keep_rank, pins = ranking_of(uniqueness_scores)
    groups = assign_groups(
        uniqueness_scores, near_duplicate_pairs, keep_rank, thresholds, policy.near_duplicate_action, pins
    )
    interchange = interchange_table(uniqueness_scores, groups)
    duplicates = duplicates_table(interchange)
    # Into this run's export set; clean_dataset publishes it (top-level names switch together).
    for name, table in (
        ("uniqueness.csv", interchange),
        ("uniqueness.parquet", interchange),
        ("duplicates.csv", duplicates),
    ):
        output_store.write_table(name, table, run_id=context.run_id)
    uniqueness_csv, duplicates_csv = output_store.root / "uniqueness.csv", output_store.root / "duplicates.csv"

    group_count = int(interchange["group_id"].dropna().nunique())
    groups_for_review = report_groups(interchange, raw_images)
    thumbnail = cached_thumbnails(raw_images, image_store, output_store)
    report = write_duplicates_report(groups_for_review, thumbnail, output_store, policy, context.run_id, thresholds)
    report_html = output_store.root / REPORT_FILE
    context.log.info(f"duplicates report: {report.groups_shown} of {report.groups_total} groups, {report_html}")
    if report.thumbnail_errors:
        sample = dict(list(report.thumbnail_errors.items())[:10])
        context.log.warning(
            f"{len(report.thumbnail_errors)} thumbnails could not be made (the report shows why), e.g. {sample}"
        )
    yield dg.Output(
        interchange,
        output_name="duplicate_groups",
        metadata=table_metadata(interchange, groups=group_count, export=dg.MetadataValue.path(str(uniqueness_csv))),
    )
    url = output_store.report_url(report_html)
    report_link: dict[str, Any] = {"report_url": dg.MetadataValue.url(url)} if url else {}
    yield dg.Output(
        duplicates,
        output_name="duplicates_collection",
        metadata=table_metadata(
            duplicates,
            by_relation=dg.MetadataValue.json(duplicates["relation"].fillna("pinned").value_counts().to_dict()),
            near_duplicate_action=policy.near_duplicate_action,
            keep_policy=policy.keep_policy,
            export=dg.MetadataValue.path(str(duplicates_csv)),
            duplicate_groups_preview=dg.MetadataValue.md(
                # Shrunk from the report's thumbnails, which were just made (or cached).
                duplicate_groups_markdown(
                    groups_for_review[:UI_PREVIEW_GROUPS],
                    lambda path: thumbnail_jpeg(Image.open(io.BytesIO(thumbnail(path))), UI_THUMBNAIL_SIZE, quality=70),
                )
            ),
            report=dg.MetadataValue.path(str(report_html)),
            **report_link,
            report_groups=dg.MetadataValue.int(report.groups_shown),
            report_groups_left_out=dg.MetadataValue.int(report.groups_total - report.groups_shown),
            thumbnail_errors=dg.MetadataValue.json(report.thumbnail_errors),
        ),
    )

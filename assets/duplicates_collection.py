"""Stage 5: duplicate / near-duplicate groups by leader assignment, and the Duplicates collection."""

import dagster as dg
import pandas as pd

from assets.metadata import table_metadata
from core.collections import duplicates_table, interchange_table
from core.grouping import assign_groups, keep_policy_order
from resources.image_store import ImageStoreResource
from resources.output_store import OutputStoreResource
from resources.policy import DedupPolicyResource


@dg.multi_asset(
    outs={
        "duplicate_groups": dg.AssetOut(description="Every scored image with its group, keeper and removal decision (SPEC.md interchange columns first)."),
        "duplicates_collection": dg.AssetOut(description="Images removed as duplicates, each naming its keeper (duplicate_of) and the reason."),
    },
    group_name="dedup",
)
def collect_duplicates(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    uniqueness_scores: pd.DataFrame,
    near_duplicate_pairs: pd.DataFrame,
    image_store: ImageStoreResource,
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
):
    pins = image_store.review_pins()
    keep_rank = keep_policy_order(raw_images, policy.keep_policy, pins)
    groups = assign_groups(uniqueness_scores, near_duplicate_pairs, keep_rank, policy.thresholds, policy.near_duplicate_action, pins)
    interchange = interchange_table(uniqueness_scores, groups)
    duplicates = duplicates_table(interchange)
    uniqueness_csv = output_store.write_table("uniqueness.csv", interchange)
    output_store.write_table("uniqueness.parquet", interchange)
    duplicates_csv = output_store.write_table("duplicates.csv", duplicates)

    group_count = int(interchange["group_id"].dropna().nunique())
    yield dg.Output(
        interchange,
        output_name="duplicate_groups",
        metadata=table_metadata(interchange, groups=group_count, export=dg.MetadataValue.path(str(uniqueness_csv))),
    )
    yield dg.Output(
        duplicates,
        output_name="duplicates_collection",
        metadata=table_metadata(
            duplicates,
            by_relation=dg.MetadataValue.json(duplicates["relation"].fillna("pinned").value_counts().to_dict()),
            near_duplicate_action=policy.near_duplicate_action,
            keep_policy=policy.keep_policy,
            export=dg.MetadataValue.path(str(duplicates_csv)),
        ),
    )

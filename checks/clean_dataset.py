"""Checks on `clean_dataset`: no copies, no pair within the duplicate threshold (verified against
the vector table, not the upstream labels) and `clean + duplicates + rejected == discovered`."""

import dagster as dg
import pandas as pd

from checks.gx import gx_expectations, named_result, run_expectations
from checks.invariants import accounting_counts, collection_placements, nearest_kept_contents
from resources.lancedb import LanceDBResource
from resources.policy import DedupPolicyResource


def unique_pixel_hash_suite() -> list:
    gxe = gx_expectations()
    return [gxe.ExpectColumnValuesToBeUnique(column="pixel_hash")]


def no_duplicate_pairs_suite(duplicate_threshold: float, with_closest_pair: bool = True) -> list:
    """Run on `nearest_kept_contents`: every kept content is farther than the duplicate threshold
    (uniqueness scale) from every other kept content.

    Args:
        duplicate_threshold: pairs at or below this uniqueness distance are duplicates.
        with_closest_pair: also expect on the column minimum, whose observed value is the closest
            kept pair's distance; leave it out when fewer than two contents are kept (no pair
            exists, and GX fails a minimum over no values).
    """
    gxe = gx_expectations()
    per_content = gxe.ExpectColumnValuesToBeBetween(column="nearest_uniqueness_distance", min_value=duplicate_threshold, strict_min=True)
    if not with_closest_pair:
        return [per_content]
    return [gxe.ExpectColumnMinToBeBetween(column="nearest_uniqueness_distance", min_value=duplicate_threshold, strict_min=True), per_content]


def accounting_suite(discovered: int) -> list:
    """Run on `collection_placements`: each discovered file in exactly one collection, nothing else."""
    gxe = gx_expectations()
    return [
        gxe.ExpectColumnSumToBeBetween(column="times_placed", min_value=discovered, max_value=discovered),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="times_placed", column_B="discovered"),
    ]


def clean_dataset_unique_pixel_hash(clean_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    return run_expectations(clean_dataset, unique_pixel_hash_suite(), suite_name="clean_dataset_unique_pixel_hash", id_columns=("path",))


def clean_dataset_no_duplicate_pairs(
    clean_dataset: pd.DataFrame, image_vectors: dict, lancedb: LanceDBResource, policy: DedupPolicyResource
) -> dg.AssetCheckResult:
    vectors = lancedb.read_content_vectors(image_vectors["model_id"], set(clean_dataset["pixel_hash"]))
    nearest = nearest_kept_contents(
        clean_dataset, vectors, policy.hash_signal(clean_dataset), policy.thresholds.near_duplicate_cosine_distance, engine=policy.neighbor_search
    )
    return run_expectations(
        nearest,
        no_duplicate_pairs_suite(policy.duplicate_threshold, with_closest_pair=bool(nearest["nearest_uniqueness_distance"].notna().any())),
        suite_name="clean_dataset_no_duplicate_pairs",
        id_columns=("path", "nearest_path"),
        extra_metadata={
            "kept_contents": dg.MetadataValue.int(len(nearest)),
            "duplicate_threshold": dg.MetadataValue.float(policy.duplicate_threshold),
            "vector_table": dg.MetadataValue.text(lancedb.table_name(image_vectors["model_id"])),
        },
    )


def clean_dataset_accounting(
    clean_dataset: pd.DataFrame, raw_images: pd.DataFrame, rejected_images: pd.DataFrame, duplicates_collection: pd.DataFrame
) -> dg.AssetCheckResult:
    counts = accounting_counts(raw_images, rejected_images, duplicates_collection, clean_dataset)
    placements = collection_placements(raw_images, rejected_images, duplicates_collection, clean_dataset)
    return run_expectations(
        placements,
        accounting_suite(counts["discovered"]),
        suite_name="clean_dataset_accounting",
        id_columns=("image_id", "path", "in_clean", "in_duplicates", "in_rejected"),
        extra_metadata={"accounting": dg.MetadataValue.json(counts)},
    )


# Check name -> what it verifies, and the assets it reads besides clean_dataset.
DESCRIPTIONS = {
    "clean_dataset_unique_pixel_hash": "No two kept images have the same pixel hash.",
    "clean_dataset_no_duplicate_pairs": "No two kept contents lie within the duplicate threshold, by a search over their vectors in LanceDB (fused with the pHash signal; exact, or the index where the policy's neighbor_search chooses it).",
    "clean_dataset_accounting": "clean + duplicates + rejected == discovered, every discovered file in exactly one collection.",
}

READS = {
    "clean_dataset_unique_pixel_hash": [],
    "clean_dataset_no_duplicate_pairs": ["image_vectors"],
    "clean_dataset_accounting": ["raw_images", "rejected_images", "duplicates_collection"],
}


@dg.multi_asset_check(
    # Each rule is its own blocking check in the UI; one step runs them, as a step costs more
    # than the rules themselves.
    specs=[
        dg.AssetCheckSpec(name, asset="clean_dataset", blocking=True, description=DESCRIPTIONS[name], additional_deps=READS[name])
        for name in DESCRIPTIONS
    ],
    ins={
        "clean_dataset": dg.AssetIn("clean_dataset"),
        "image_vectors": dg.AssetIn("image_vectors"),
        "raw_images": dg.AssetIn("raw_images"),
        "rejected_images": dg.AssetIn("rejected_images"),
        "duplicates_collection": dg.AssetIn("duplicates_collection"),
    },
)
def clean_dataset_checks(
    clean_dataset: pd.DataFrame,
    image_vectors: dict,
    raw_images: pd.DataFrame,
    rejected_images: pd.DataFrame,
    duplicates_collection: pd.DataFrame,
    lancedb: LanceDBResource,
    policy: DedupPolicyResource,
):
    results = {
        "clean_dataset_unique_pixel_hash": clean_dataset_unique_pixel_hash(clean_dataset),
        "clean_dataset_no_duplicate_pairs": clean_dataset_no_duplicate_pairs(clean_dataset, image_vectors, lancedb, policy),
        "clean_dataset_accounting": clean_dataset_accounting(clean_dataset, raw_images, rejected_images, duplicates_collection),
    }
    for name, result in results.items():
        yield named_result(result, name, "clean_dataset")


CLEAN_DATASET_CHECKS = [clean_dataset_checks]

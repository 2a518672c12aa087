"""Checks on `clean_dataset`, the gates before training: no copies, no pair within the duplicate
threshold (verified against the vector table, not the upstream labels),
`clean + duplicates + rejected == discovered`, and the raw-data gate on the share of images removed.

They hold back `training_manifest` only: the clean set itself and every export are written first,
whatever the duplicate fraction (SPEC.md, "Checks that gate training")."""

from pathlib import Path

import dagster as dg
import pandas as pd

from imgdedup_pipeline.checks.gates import raise_if_any_failed, with_gate_metadata
from imgdedup_pipeline.checks.gx import gx_expectations, run_expectations
from imgdedup_pipeline.checks.invariants import (
    accounting_counts,
    collection_placements,
    nearest_kept_contents,
    removal_flags,
)
from imgdedup_pipeline.core.collections import withdraw_changed_contents
from imgdedup_pipeline.core.disposable_cache import inputs_digest, result_for_inputs
from imgdedup_pipeline.core.search.choose import choose_engine
from imgdedup_pipeline.core.search.contents import ContentVectors
from imgdedup_pipeline.core.search.signals import HashSignal
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource

# Where the nearest-kept-content tables of earlier runs are kept (under OUT/state), and the
# version of their meaning: bump it when `nearest_kept_contents` changes its answer or its columns.
NEAREST_TABLES_FOLDER = "check-tables"
NEAREST_TABLE_FORMAT = 2


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
    per_content = gxe.ExpectColumnValuesToBeBetween(
        column="nearest_uniqueness_distance", min_value=duplicate_threshold, strict_min=True
    )
    if not with_closest_pair:
        return [per_content]
    return [
        gxe.ExpectColumnMinToBeBetween(
            column="nearest_uniqueness_distance", min_value=duplicate_threshold, strict_min=True
        ),
        per_content,
    ]


def accounting_suite(discovered: int) -> list:
    """Run on `collection_placements`: each discovered file in exactly one collection, nothing else."""
    gxe = gx_expectations()
    return [
        gxe.ExpectColumnSumToBeBetween(column="times_placed", min_value=discovered, max_value=discovered),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="times_placed", column_B="discovered"),
    ]


def clean_dataset_unique_pixel_hash(clean_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    return run_expectations(
        clean_dataset, unique_pixel_hash_suite(), suite_name="clean_dataset_unique_pixel_hash", id_columns=("path",)
    )


def nearest_kept_contents_digest(
    clean: pd.DataFrame,
    vectors: ContentVectors,
    hash_signal: HashSignal | None,
    near_duplicate_cosine_distance: float,
    engine: str,
) -> str:
    """`inputs_digest` of everything `nearest_kept_contents` reads: the kept contents and their
    first paths, their vectors as read from the vector table, their pHashes, edge hashes and the signal's cutoffs,
    the distance the cutoff maps to and the search engine chosen (with the table's format)."""
    contents = clean.sort_values("path").drop_duplicates("pixel_hash")
    hashes = sorted(contents["pixel_hash"])
    informative_hashes = None
    if hash_signal is not None and hash_signal.threshold_bits > 0:
        informative_hashes = (
            hash_signal.threshold_bits,
            hash_signal.edge_agreement_bits,
            hash_signal.matrix(hashes),
            hash_signal.edges(hashes),
        )
    return inputs_digest(
        NEAREST_TABLE_FORMAT,
        contents["pixel_hash"].to_numpy(dtype=object),
        contents["path"].to_numpy(dtype=object),
        vectors.hashes,
        vectors.matrix,
        informative_hashes,
        float(near_duplicate_cosine_distance),
        choose_engine("cosine", len(hashes), engine).mode,
    )


def clean_dataset_no_duplicate_pairs(
    clean_dataset: pd.DataFrame,
    image_vectors: dict,
    lancedb: LanceDBResource,
    policy: DedupPolicyResource,
    state_dir: Path | None = None,
) -> dg.AssetCheckResult:
    """The check on the kept contents' nearest neighbours. With `state_dir`, the nearest-content
    table of an earlier run is reused when every input it came from (vectors read from the table
    this run, pHashes, paths, thresholds, engine) is unchanged; the expectations always run."""
    vectors = lancedb.read_content_vectors(image_vectors["model_id"], set(clean_dataset["pixel_hash"]))
    hash_signal = policy.hash_signal(clean_dataset)
    cosine_radius = policy.thresholds_in_force(image_vectors["model_id"]).thresholds.near_duplicate_cosine_distance

    def search() -> pd.DataFrame:
        return nearest_kept_contents(clean_dataset, vectors, hash_signal, cosine_radius, engine=policy.neighbor_search)

    if state_dir is None:
        nearest, reused = search(), False
    else:
        digest = nearest_kept_contents_digest(
            clean_dataset, vectors, hash_signal, cosine_radius, policy.neighbor_search
        )
        nearest, reused = result_for_inputs(
            Path(state_dir) / NEAREST_TABLES_FOLDER,
            "clean_dataset_nearest.parquet",
            digest,
            search,
            read=pd.read_parquet,
            write=lambda table, path: table.to_parquet(path),
            warn=dg.get_dagster_logger().warning,
        )
    return run_expectations(
        nearest,
        no_duplicate_pairs_suite(
            policy.duplicate_threshold, with_closest_pair=bool(nearest["nearest_uniqueness_distance"].notna().any())
        ),
        suite_name="clean_dataset_no_duplicate_pairs",
        id_columns=("path", "nearest_path"),
        extra_metadata={
            "kept_contents": dg.MetadataValue.int(len(nearest)),
            "duplicate_threshold": dg.MetadataValue.float(policy.duplicate_threshold),
            "vector_table": dg.MetadataValue.text(lancedb.table_name(image_vectors["model_id"])),
            "nearest_search": dg.MetadataValue.text(
                "reused: vectors, pHashes, paths and settings as in an earlier run" if reused else "searched"
            ),
        },
    )


def clean_dataset_accounting(
    clean_dataset: pd.DataFrame,
    raw_images: pd.DataFrame,
    rejected_images: pd.DataFrame,
    duplicates_collection: pd.DataFrame,
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


REMOVED_SAMPLE_SIZE = 10


def duplicate_fraction_suite(max_duplicate_fraction: float) -> list:
    """Run on `removal_flags`: the mean of the 0/1 flags is the share of decodable images removed."""
    gxe = gx_expectations()
    return [gxe.ExpectColumnMeanToBeBetween(column="removed", min_value=0.0, max_value=max_duplicate_fraction)]


def clean_dataset_duplicate_fraction(
    raw_images: pd.DataFrame, duplicates_collection: pd.DataFrame, policy: DedupPolicyResource
) -> dg.AssetCheckResult:
    flags = removal_flags(raw_images, duplicates_collection)
    removed = int(flags["removed"].sum())
    limit = policy.max_duplicate_fraction
    counts: dict[str, dg.MetadataValue] = {
        "decodable_images": dg.MetadataValue.int(len(flags)),
        "removed_images": dg.MetadataValue.int(removed),
        "max_duplicate_fraction": dg.MetadataValue.float(limit),
    }
    if flags.empty:
        # 0 of 0 images: no fraction exists, and nothing was removed wrongly.
        return dg.AssetCheckResult(
            passed=True,
            metadata={**counts, "observed_value": dg.MetadataValue.null()},
            description="no decodable images",
        )
    fraction = removed / len(flags)
    if removed:
        counts["removed_sample"] = dg.MetadataValue.json(
            flags.loc[flags["removed"] == 1, "path"].head(REMOVED_SAMPLE_SIZE).tolist()
        )
    comparison = "above" if fraction > limit else "within"
    description = (
        f"removed {removed} of {len(flags)} decodable images: fraction {fraction:.3f}, {comparison} the limit {limit:g}"
    )
    return run_expectations(
        flags,
        duplicate_fraction_suite(limit),
        suite_name="clean_dataset_duplicate_fraction",
        extra_metadata=counts,
        description=description,
    )


# Check name -> what it verifies, and the assets it reads besides clean_dataset.
DESCRIPTIONS = {
    "clean_dataset_unique_pixel_hash": "No two kept images have the same pixel hash.",
    "clean_dataset_no_duplicate_pairs": "No two kept contents lie within the duplicate threshold, by a search over their vectors in LanceDB (fused with the pHash signal; exact, or the index where the policy's neighbor_search chooses it).",
    "clean_dataset_accounting": "clean + duplicates + rejected == discovered, every discovered file in exactly one collection.",
    "clean_dataset_duplicate_fraction": (
        "Raw-data gate: the share of decodable images removed as duplicates (keepers do not count) is at most the policy's "
        "max_duplicate_fraction; more means something upstream is wrong (a scraper looping, a folder synced twice)."
    ),
}

READS = {
    "clean_dataset_unique_pixel_hash": [],
    "clean_dataset_no_duplicate_pairs": ["image_vectors"],
    "clean_dataset_accounting": ["raw_images", "rejected_images", "duplicates_collection"],
    "clean_dataset_duplicate_fraction": ["raw_images", "duplicates_collection"],
}


@dg.multi_asset_check(
    # Each rule is its own blocking check in the UI; one step runs them, as a step costs more
    # than the rules themselves.
    specs=[
        dg.AssetCheckSpec(
            name, asset="clean_dataset", blocking=True, description=DESCRIPTIONS[name], additional_deps=READS[name]
        )
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
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
):
    raw_images, rejected_images = withdraw_changed_contents(
        raw_images, rejected_images, image_vectors.get("changed_during_run", {})
    )
    results = {
        "clean_dataset_unique_pixel_hash": clean_dataset_unique_pixel_hash(clean_dataset),
        "clean_dataset_no_duplicate_pairs": clean_dataset_no_duplicate_pairs(
            clean_dataset, image_vectors, lancedb, policy, output_store.state_dir
        ),
        "clean_dataset_accounting": clean_dataset_accounting(
            clean_dataset, raw_images, rejected_images, duplicates_collection
        ),
        "clean_dataset_duplicate_fraction": clean_dataset_duplicate_fraction(raw_images, duplicates_collection, policy),
    }
    named = [with_gate_metadata(result, name, "clean_dataset") for name, result in results.items()]
    yield from named
    raise_if_any_failed(named)


CLEAN_DATASET_CHECKS = [clean_dataset_checks]

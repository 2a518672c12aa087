"""Stage 4: SPEC.md's uniqueness score per image, from nearest-neighbour search (exact, or an index
for very large collections: `DedupPolicyResource.neighbor_search`)."""

from pathlib import Path

import dagster as dg
import pandas as pd

from imgdedup_pipeline.assets.metadata import png_markdown, table_metadata, write_export_file
from imgdedup_pipeline.core.plots import UNIQUENESS_HISTOGRAM_FILE as HISTOGRAM_FILE
from imgdedup_pipeline.core.plots import cached_uniqueness_histogram
from imgdedup_pipeline.core.scoring import LABELS
from imgdedup_pipeline.core.ui_markdown import label_histogram_markdown, markdown_table
from imgdedup_pipeline.core.uniqueness import ScoredImages, score_images, without_changed
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource, ThresholdsInForce

LOWEST_ROWS = 20


def scores_metadata(
    scored: ScoredImages, in_force: ThresholdsInForce, model_id: str, histogram: bytes, histogram_png: Path
) -> dict:
    """What the UI shows for `uniqueness_scores`: counts per label, the thresholds in force, the
    neighbour search, the histogram and the lowest scores."""
    scores, thresholds = scored.scores, in_force.thresholds
    counts = scores["label"].value_counts().reindex(LABELS, fill_value=0).to_dict()
    in_force_text = (
        f"Thresholds in force ({model_id}): `duplicate` uniqueness ≤ {thresholds.duplicate:g} < "
        f"`near_duplicate` ≤ {thresholds.near_duplicate:g} < `unique`; near-duplicate threshold {in_force.describe()}."
    )
    lowest = scores.sort_values(["uniqueness", "path"]).head(LOWEST_ROWS)[
        ["path", "uniqueness", "label", "nearest_path"]
    ]
    return table_metadata(
        scores,
        preview_rows=0,
        # First, and short enough that the UI shows it in place (the PNG sits behind a click).
        label_histogram=dg.MetadataValue.md(label_histogram_markdown(scores["uniqueness"], thresholds)),
        label_counts=dg.MetadataValue.json(counts),
        **{f"{label}_count": dg.MetadataValue.int(int(counts[label])) for label in LABELS},
        thresholds=dg.MetadataValue.json(
            {
                "duplicate": thresholds.duplicate,
                "near_duplicate": thresholds.near_duplicate,
                "near_duplicate_source": in_force.source,
            }
        ),
        near_duplicate_threshold=dg.MetadataValue.float(float(thresholds.near_duplicate)),
        near_duplicate_threshold_source=dg.MetadataValue.text(in_force.describe()),
        model_id=model_id,
        neighbor_search=dg.MetadataValue.json(scored.search_modes),
        uniqueness_histogram=png_markdown(histogram, "uniqueness histogram", in_force_text),
        uniqueness_histogram_png=dg.MetadataValue.path(str(histogram_png)),
        lowest_scores=dg.MetadataValue.md(f"{in_force_text}\n\n{markdown_table(lowest)}"),
    )


@dg.multi_asset(
    outs={
        "uniqueness_scores": dg.AssetOut(
            description="Uniqueness in [0, 1] per image (1 = unique) with its label; copies score exactly 0."
        ),
        "near_duplicate_pairs": dg.AssetOut(
            description="Pairs of distinct contents within the near-duplicate threshold (cosine distance)."
        ),
    },
    # No dependency on `embedding_thresholds`: the calibrated threshold is read from its stored file
    # when one exists (see assets/calibration.py); a dependency on an asset that is only run on
    # demand would make the UI's "Materialize all" ask to confirm, on every fresh instance.
    group_name="dedup",
)
def score_uniqueness(
    context: dg.AssetExecutionContext,
    raw_images: pd.DataFrame,
    image_vectors: dict,
    lancedb: LanceDBResource,
    image_store: ImageStoreResource,
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
):
    # Pinned by the user, else calibrated for this model (embedding_thresholds), else the default.
    model_id = image_vectors["model_id"]
    in_force = policy.thresholds_in_force(model_id)
    thresholds = in_force.thresholds
    raw_images = without_changed(raw_images, image_vectors.get("changed_during_run", {}))
    context.log.info(f"near-duplicate threshold {in_force.describe()}")
    scored = score_images(
        raw_images,
        # Read inside, so that the vectors are freed once searched (the stage's peak at 1M).
        lambda: lancedb.read_content_vectors(model_id, set(raw_images["pixel_hash"])),
        thresholds,
        keep_policy=policy.keep_policy,
        review_pins=image_store.review_pins(),  # read once per run: the scores carry rank and pins on
        hash_signal=policy.hash_signal(raw_images),
        engine=policy.neighbor_search,
        cache_file=output_store.neighbor_search_cache(lancedb.table_name(model_id)),
        warn=context.log.warning,
        load_rgb=image_store.load_rgb if policy.check_turned_copies else None,
    )
    context.log.info(
        "neighbour search: " + "; ".join(f"{signal} {mode}" for signal, mode in scored.search_modes.items())
    )
    histogram = cached_uniqueness_histogram(
        scored.scores["uniqueness"], thresholds, output_store.figures_dir, context.log.warning
    )
    write_export_file(output_store, HISTOGRAM_FILE, histogram, run_id=context.run_id)
    # The PNG's path once published with the rest of the set.
    metadata = scores_metadata(scored, in_force, model_id, histogram, output_store.root / HISTOGRAM_FILE)
    yield dg.Output(scored.scores, output_name="uniqueness_scores", metadata=metadata)
    pairs = scored.pairs
    yield dg.Output(pairs, output_name="near_duplicate_pairs", metadata=table_metadata(pairs))

"""Stage 4: SPEC.md's uniqueness score per image, from nearest-neighbour search (exact, or an index
for very large collections: `DedupPolicyResource.neighbor_search`)."""

from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.image_embeddings import path_per_content
from assets.metadata import png_markdown, table_metadata, write_export_file
from core.disposable_cache import inputs_digest, result_for_inputs
from core.grouping import keep_policy_order
from core.plots import uniqueness_histogram_png
from core.rotated_copies import RotatedCopySignal
from core.scoring import LABELS, Thresholds, compute_uniqueness_scores
from core.search.cache import SearchCache
from core.search.contents import find_content_neighbors
from core.ui_markdown import label_histogram_markdown, markdown_table
from resources.image_store import ImageStoreResource
from resources.lancedb import LanceDBResource
from resources.output_store import OutputStoreResource
from resources.policy import DedupPolicyResource


def rotated_copy_signal(raw_images: pd.DataFrame, image_store: ImageStoreResource) -> RotatedCopySignal:
    """The turned-copy check, reading each content from the file embedded for it."""
    path_of = path_per_content(raw_images)
    return RotatedCopySignal(lambda pixel_hash, draft: image_store.load_rgb(path_of[pixel_hash], draft_size=draft))


HISTOGRAM_FILE = "uniqueness_histogram.png"
# Bump when `uniqueness_histogram_png` draws differently: a stored PNG is reused only under it.
HISTOGRAM_FORMAT = 1
LOWEST_ROWS = 20
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def read_complete_png(path: Path) -> bytes:
    """A stored PNG's bytes; ValueError when it is cut short or no PNG (the cache then recomputes)."""
    data = path.read_bytes()
    if not (data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)):
        raise ValueError(f"not a complete PNG file ({len(data)} bytes)")
    return data


def uniqueness_histogram(uniqueness: pd.Series, thresholds: Thresholds, state_dir: Path, warn) -> bytes:
    """`uniqueness_histogram_png` of the scores, or the same PNG stored by an earlier run whose
    scores, thresholds and matplotlib were the same (matplotlib's import and drawing are most of
    a no-change rerun's scoring step)."""
    digest = inputs_digest(
        HISTOGRAM_FORMAT,
        version("matplotlib"),
        uniqueness.to_numpy(dtype="float64"),
        float(thresholds.duplicate),
        float(thresholds.near_duplicate),
    )
    png, _ = result_for_inputs(
        state_dir / "figures",
        HISTOGRAM_FILE,
        digest,
        lambda: uniqueness_histogram_png(uniqueness, thresholds),
        read=read_complete_png,
        write=lambda data, path: Path(path).write_bytes(data),
        warn=warn,
    )
    return png


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
    in_force = policy.thresholds_in_force(image_vectors["model_id"])
    thresholds = in_force.thresholds
    # Files that changed after the catalog have no vector in this run; they are rejected, not scored.
    raw_images = raw_images[~raw_images["pixel_hash"].isin(image_vectors.get("changed_during_run", {}).keys())]
    context.log.info(f"near-duplicate threshold {in_force.describe()}")
    vectors = lancedb.read_content_vectors(image_vectors["model_id"], set(raw_images["pixel_hash"]))
    # The last run's embedding search for this model's table: only new contents (and those that
    # lost a neighbour) are searched again. A cache that does not fit is ignored.
    cache_file = (
        output_store.state_dir / "neighbor-searches" / f"{lancedb.table_name(image_vectors['model_id'])}-embedding.npz"
    )
    neighbors = find_content_neighbors(
        vectors,
        radius=thresholds.near_duplicate_cosine_distance,
        hash_signal=policy.hash_signal(raw_images),
        cache=SearchCache(cache_file, context.log.warning),
        engine=policy.neighbor_search,
        rotated_copy_signal=rotated_copy_signal(raw_images, image_store) if policy.check_turned_copies else None,
    )
    search_modes = {
        signal: f"{u.mode}, {u.searched_rows} of {len(neighbors.pixel_hashes)} contents searched"
        + (f" ({u.reason})" if u.reason else "")
        for signal, u in neighbors.updates.items()
    }
    context.log.info("neighbour search: " + "; ".join(f"{signal} {mode}" for signal, mode in search_modes.items()))
    keep_rank = keep_policy_order(raw_images, policy.keep_policy, image_store.review_pins())
    scores = compute_uniqueness_scores(raw_images, neighbors, keep_rank, thresholds)
    pairs = neighbors.pairs_by_hash()

    counts = scores["label"].value_counts().reindex(LABELS, fill_value=0).to_dict()
    in_force_text = (
        f"Thresholds in force ({image_vectors['model_id']}): `duplicate` uniqueness ≤ {thresholds.duplicate:g} < "
        f"`near_duplicate` ≤ {thresholds.near_duplicate:g} < `unique`; near-duplicate threshold {in_force.describe()}."
    )
    lowest = scores.sort_values(["uniqueness", "path"]).head(LOWEST_ROWS)[
        ["path", "uniqueness", "label", "nearest_path"]
    ]
    histogram = uniqueness_histogram(scores["uniqueness"], thresholds, output_store.state_dir, context.log.warning)
    write_export_file(output_store, HISTOGRAM_FILE, histogram, run_id=context.run_id)
    histogram_png = output_store.root / HISTOGRAM_FILE  # published with the rest of the set
    yield dg.Output(
        scores,
        output_name="uniqueness_scores",
        metadata=table_metadata(
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
            model_id=image_vectors["model_id"],
            neighbor_search=dg.MetadataValue.json(search_modes),
            uniqueness_histogram=png_markdown(histogram, "uniqueness histogram", in_force_text),
            uniqueness_histogram_png=dg.MetadataValue.path(str(histogram_png)),
            lowest_scores=dg.MetadataValue.md(f"{in_force_text}\n\n{markdown_table(lowest)}"),
        ),
    )
    yield dg.Output(pairs, output_name="near_duplicate_pairs", metadata=table_metadata(pairs))

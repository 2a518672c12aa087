"""The near-duplicate threshold calibrated per embedding model from the user's own images (no labels).

Not part of `dedup_job`: it runs when asked (the UI, or `imgdedup calibrate`), and scoring picks up
the stored value for its model on the next run unless the threshold is pinned. It needs the vector
table (negatives are searched among all the dataset's contents), whose vectors a later run reuses.
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.metadata import png_markdown, write_export_file
from core.calibration import (
    CalibrationOutcome,
    Population,
    calibrate_threshold,
    decided_distances,
    read_calibrations,
    sample_digest,
    sample_rows,
    write_calibration,
)
from core.images import ImageRejected
from core.plots import calibration_histogram_png
from resources.embedding_model import EmbeddingModelResource
from resources.image_store import ImageStoreResource
from resources.lancedb import LanceDBResource
from resources.output_store import OutputStoreResource
from resources.policy import DedupPolicyResource

CALIBRATION_GROUP = "calibration"
HISTOGRAM_FILE = "calibration_histogram.png"


class CalibrationConfig(dg.Config):
    """force: recalibrate even when the stored calibration was made on this very sample."""

    force: bool = False


def _histogram(outcome: CalibrationOutcome, hash_threshold_bits: int, model_id: str) -> bytes:
    positives, negatives = outcome.pairs.positives, outcome.pairs.negatives
    hash_matched = decided_distances(positives, hash_threshold_bits) == 0.0
    return calibration_histogram_png(
        positives["distance"],
        hash_matched & (positives["distance"] > 0),
        negatives["distance"],
        outcome.choice.threshold,
        title=f"Calibration of {model_id} on {outcome.record['sample_size']} images",
    )


@dg.asset(group_name=CALIBRATION_GROUP)
def embedding_thresholds(
    context: dg.AssetExecutionContext,
    config: CalibrationConfig,
    raw_images: pd.DataFrame,
    image_vectors: dict,
    image_store: ImageStoreResource,
    embedding_model: EmbeddingModelResource,
    lancedb: LanceDBResource,
    output_store: OutputStoreResource,
    policy: DedupPolicyResource,
) -> dg.Output[dict]:
    """The near-duplicate threshold per embedding model, chosen from edited copies of a sample of the raw images."""
    if not policy.thresholds_file:
        raise ValueError(
            "the policy resource has no thresholds_file, so a calibration could not be used; build resources with resources_for(settings)"
        )
    embedder = embedding_model.get_embedder()
    model_id = embedder.model_id
    if image_vectors["model_id"] != model_id:
        raise ValueError(
            f"the vector table holds {image_vectors['model_id']}, but the configured model is {model_id}; rematerialize image_vectors"
        )
    sample = sample_rows(raw_images, policy.calibration_sample_size, policy.calibration_seed)
    contents = raw_images.drop_duplicates("pixel_hash").sort_values("pixel_hash", ignore_index=True)
    # The same sample in the same population gives the same answer: no need to embed it again.
    digest = sample_digest([*sample["pixel_hash"], "|", *contents["pixel_hash"]])
    stored = read_calibrations(policy.thresholds_file).get(model_id)
    parameters = {
        "seed": policy.calibration_seed,
        "target_precision": policy.target_precision,
        "hash_threshold_bits": policy.hash_threshold_bits,
    }
    if (
        stored
        and not config.force
        and stored.get("sample_digest") == digest
        and all(stored.get(k) == v for k, v in parameters.items())
    ):
        context.log.info(
            f"{model_id}: the stored calibration was made on this sample with these settings; reusing it (force=true recalibrates)"
        )
        return dg.Output(
            stored,
            metadata={
                "model_id": model_id,
                "near_duplicate_threshold": stored["near_duplicate_threshold"],
                "reused": True,
            },
        )

    originals, unreadable = [], {}
    draft = (2 * embedder.input_size, 2 * embedder.input_size)
    for path, content in zip(sample["path"], sample["pixel_hash"]):
        try:
            originals.append((content, image_store.load_rgb(path, draft)))
        except ImageRejected as exc:  # changed on disk since discovery
            unreadable[path] = exc.reason
    vectors = lancedb.read_vectors(model_id, set(contents["pixel_hash"]))
    contents = contents[contents["pixel_hash"].isin(vectors.keys())]
    population = Population(
        vectors=np.stack([vectors[h] for h in contents["pixel_hash"]]),
        hashes=np.stack([np.asarray(p, dtype=np.int64).view(np.uint64) for p in contents["phashes"]]),
        pixel_hashes=contents["pixel_hash"].tolist(),
    )
    context.log.info(
        f"{model_id}: calibrating on {len(originals)} sampled images ({len(unreadable)} unreadable) against {len(contents)} contents"
    )
    outcome = calibrate_threshold(
        [image for _, image in originals],
        embedder.embed,
        policy.hash_threshold_bits,
        policy.target_precision,
        policy.calibration_seed,
        min_threshold=policy.duplicate_threshold,
        image_root=str(image_store.root),
        pixel_hashes=[h for h, _ in originals],
        batch_size=embedding_model.batch_size,
        population=population,
    )
    record = {**outcome.record, "sample_digest": digest}
    write_calibration(policy.thresholds_file, model_id, record)
    png = _histogram(outcome, policy.hash_threshold_bits, model_id)
    png_path = write_export_file(output_store, HISTOGRAM_FILE, png)
    choice = outcome.choice
    caption = (
        f"Near-duplicate threshold for `{model_id}`: **{choice.threshold:.4g}** (uniqueness scale), estimated pair precision "
        f"{choice.precision:.3f} (target {choice.target_precision}) and recall {choice.recall:.3f} of the edited copies. "
        f"Negatives are each image's nearest different content among all {len(contents)}; {len(outcome.pairs.excluded)} contents were "
        "left out as the user's own duplicates of a sampled image (identical or pHash match). Scoring uses this value from the next "
        "run on unless the threshold is pinned."
    )
    return dg.Output(
        record,
        metadata={
            "model_id": model_id,
            "near_duplicate_threshold": dg.MetadataValue.float(float(choice.threshold)),
            "estimated_precision": dg.MetadataValue.float(float(choice.precision)),
            "estimated_recall": dg.MetadataValue.float(float(choice.recall)),
            "recall_per_edit": dg.MetadataValue.json(record["recall_per_edit"]),
            "sample_size": len(originals),
            "unreadable": dg.MetadataValue.json(unreadable),
            "thresholds_file": dg.MetadataValue.path(policy.thresholds_file),
            "distributions": png_markdown(png, "calibration distributions", caption),
            "distributions_png": dg.MetadataValue.path(str(png_path)),
            "reused": False,
        },
    )

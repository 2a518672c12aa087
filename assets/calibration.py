"""The near-duplicate threshold calibrated per embedding model from the user's own images (no labels).

Not part of `dedup_job`: it runs when asked (the UI, or `imgdedup calibrate`), and scoring picks up
the stored value for its model on the next run unless the threshold is pinned. It needs the vector
table (negatives are searched among all the dataset's contents), whose vectors a later run reuses.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from imgdedup_pipeline.assets.metadata import png_markdown, write_export_file
from imgdedup_pipeline.core.calibration import CalibrationOutcome
from imgdedup_pipeline.core.calibration_run import (
    CatalogCalibration,
    calibrate_catalog,
    calibration_caption,
    calibration_histogram,
)
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource

CALIBRATION_GROUP = "calibration"
HISTOGRAM_FILE = "calibration_histogram.png"


class CalibrationConfig(dg.Config):
    """force: recalibrate even when the stored calibration was made on this very sample."""

    force: bool = False


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
    settings = policy.calibration_settings(embedding_model.batch_size, force=config.force)
    run = calibrate_catalog(
        raw_images,
        image_vectors["model_id"],
        embedding_model.get_embedder,
        image_store.load_rgb,
        lancedb.read_vectors,
        settings,
        str(image_store.root),
        context.log.info,
    )
    model_id, record = run.model_id, run.record
    if run.outcome is None:
        metadata = {
            "model_id": model_id,
            "near_duplicate_threshold": record["near_duplicate_threshold"],
            "reused": True,
        }
        return dg.Output(record, metadata=metadata)
    png = calibration_histogram(run.outcome, policy.hash_threshold_bits, model_id)
    # Without a run id the figure goes to the local output folder: a path.
    png_path = Path(write_export_file(output_store, HISTOGRAM_FILE, png))
    return dg.Output(record, metadata=calibration_metadata(run, run.outcome, png, png_path, settings.thresholds_file))


def calibration_metadata(
    run: CatalogCalibration, outcome: CalibrationOutcome, png: bytes, png_path: Path, thresholds_file: str
) -> dict:
    """What the UI shows for a fresh calibration (`outcome`, the run's): the threshold, its
    estimated precision and recall, the figure."""
    choice, record = outcome.choice, run.record
    return {
        "model_id": run.model_id,
        "near_duplicate_threshold": dg.MetadataValue.float(float(choice.threshold)),
        "estimated_precision": dg.MetadataValue.float(float(choice.precision)),
        "estimated_recall": dg.MetadataValue.float(float(choice.recall)),
        "recall_per_edit": dg.MetadataValue.json(record["recall_per_edit"]),
        "sample_size": run.sample_size,
        "unreadable": dg.MetadataValue.json(run.unreadable),
        "thresholds_file": dg.MetadataValue.path(thresholds_file),
        "distributions": png_markdown(
            png, "calibration distributions", calibration_caption(run.model_id, outcome, run.population_size)
        ),
        "distributions_png": dg.MetadataValue.path(str(png_path)),
        "reused": False,
    }

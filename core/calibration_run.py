"""The calibration stage's work without Dagster (`calibrate_catalog`): sample the catalog, reuse a
calibration stored for the same sample and settings, else calibrate the near-duplicate threshold
on edited copies of the sample and store it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.calibration import (
    CALIBRATION_RULES_VERSION,
    CalibrationOutcome,
    Population,
    calibrate_threshold,
    decided_distances,
    read_calibrations,
    sample_digest,
    sample_rows,
    write_calibration,
)
from imgdedup_pipeline.core.embedders import Embedder
from imgdedup_pipeline.core.images import ImageRejected


@dataclass(frozen=True)
class CalibrationSettings:
    """The policy values calibration reads (see `core.settings.Settings`)."""

    thresholds_file: str
    sample_size: int
    seed: int
    target_precision: float
    hash_threshold_bits: int
    duplicate_threshold: float
    batch_size: int
    force: bool = False


@dataclass(frozen=True)
class CatalogCalibration:
    """What `calibrate_catalog` returns.

    Attributes:
        model_id: the configured model the calibration is for.
        record: the stored calibration for the model (`write_calibration`'s record plus `sample_digest`).
        reused: True when the stored record was made on this sample with these settings.
        sample_size: images calibrated on (0 when reused).
        unreadable: path -> reason for sampled images that could not be read.
        population_size: contents the negatives were searched in.
        outcome: the measured calibration (None when reused).
    """

    model_id: str
    record: dict
    reused: bool
    sample_size: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    population_size: int = 0
    outcome: CalibrationOutcome | None = None


def calibrate_catalog(
    raw_images: pd.DataFrame,
    vectors_model_id: str,
    get_embedder: Callable[[], Embedder],
    load_rgb: Callable,
    read_vectors: Callable[[str, set[str]], Mapping[str, np.ndarray]],
    settings: CalibrationSettings,
    image_root: str,
    log: Callable[[str], None],
) -> CatalogCalibration:
    """The near-duplicate threshold for the configured model, chosen from edited copies of a sample
    of `raw_images` (negatives searched among all its contents), stored in `settings.thresholds_file`.

    Args:
        raw_images: the catalog (path, pixel_hash, phashes).
        vectors_model_id: the model whose vectors the vector table holds.
        get_embedder: the configured model (loaded only once the settings are known to be usable).
        load_rgb: `load_rgb(path, draft)` -> RGB image; raises `ImageRejected` for an unreadable file.
        read_vectors: `read_vectors(model_id, pixel_hashes)` -> pixel hash -> vector.
        settings: the calibration policy values.
        image_root: recorded with the result.
        log: told what is calibrated or reused.

    Raises:
        ValueError: no thresholds file to store into, or vectors of another model.
    """
    if not settings.thresholds_file:
        raise ValueError(
            "the policy resource has no thresholds_file, so a calibration could not be used; build resources with resources_for(settings)"
        )
    embedder = get_embedder()
    model_id = embedder.model_id
    if vectors_model_id != model_id:
        raise ValueError(
            f"the vector table holds {vectors_model_id}, but the configured model is {model_id}; rematerialize image_vectors"
        )
    sample = sample_rows(raw_images, settings.sample_size, settings.seed)
    contents = raw_images.drop_duplicates("pixel_hash").sort_values("pixel_hash", ignore_index=True)
    # The same sample in the same population gives the same answer: no need to embed it again.
    digest = sample_digest([*sample["pixel_hash"], "|", *contents["pixel_hash"]])
    stored = read_calibrations(settings.thresholds_file).get(model_id)
    parameters = {
        "rules_version": CALIBRATION_RULES_VERSION,
        "seed": settings.seed,
        "target_precision": settings.target_precision,
        "hash_threshold_bits": settings.hash_threshold_bits,
    }
    if (
        stored
        and not settings.force
        and stored.get("sample_digest") == digest
        and all(stored.get(k) == v for k, v in parameters.items())
    ):
        log(
            f"{model_id}: the stored calibration was made on this sample with these settings; reusing it (force=true recalibrates)"
        )
        return CatalogCalibration(model_id, stored, reused=True)

    originals, unreadable = [], {}
    draft = (2 * embedder.input_size, 2 * embedder.input_size)
    for path, content in zip(sample["path"], sample["pixel_hash"]):
        try:
            originals.append((content, load_rgb(path, draft)))
        except ImageRejected as exc:  # changed on disk since discovery
            unreadable[path] = exc.reason
    vectors = read_vectors(model_id, set(contents["pixel_hash"]))
    contents = contents[contents["pixel_hash"].isin(vectors.keys())]
    population = Population(
        vectors=np.stack([vectors[h] for h in contents["pixel_hash"]]),
        hashes=np.stack([np.asarray(p, dtype=np.int64).view(np.uint64) for p in contents["phashes"]]),
        pixel_hashes=contents["pixel_hash"].tolist(),
        edge_hashes=np.stack([np.asarray(e, dtype=np.int64).view(np.uint64) for e in contents["edge_hash"]]),
    )
    log(
        f"{model_id}: calibrating on {len(originals)} sampled images ({len(unreadable)} unreadable) against {len(contents)} contents"
    )
    outcome = calibrate_threshold(
        [image for _, image in originals],
        embedder.embed,
        settings.hash_threshold_bits,
        settings.target_precision,
        settings.seed,
        min_threshold=settings.duplicate_threshold,
        image_root=image_root,
        pixel_hashes=[h for h, _ in originals],
        batch_size=settings.batch_size,
        population=population,
    )
    record = {**outcome.record, "sample_digest": digest}
    write_calibration(settings.thresholds_file, model_id, record)
    return CatalogCalibration(model_id, record, False, len(originals), unreadable, len(contents), outcome)


def calibration_histogram(outcome: CalibrationOutcome, hash_threshold_bits: int, model_id: str) -> bytes:
    """The PNG of the edited copies' and the negatives' distances (nearest other contents, pictures
    cut from one image), with the threshold."""
    from imgdedup_pipeline.core.plots import calibration_histogram_png

    positives, negatives = outcome.pairs.positives, outcome.pairs.negatives
    hash_matched = decided_distances(positives, hash_threshold_bits) == 0.0
    return calibration_histogram_png(
        positives["distance"],
        hash_matched & (positives["distance"] > 0),
        negatives["distance"],
        outcome.choice.threshold,
        title=f"Calibration of {model_id} on {outcome.record['sample_size']} images",
    )


def calibration_caption(model_id: str, outcome: CalibrationOutcome, population_size: int) -> str:
    """Markdown under the calibration histogram: the threshold chosen and what it was measured on."""
    choice = outcome.choice
    return (
        f"Near-duplicate threshold for `{model_id}`: **{choice.threshold:.4g}** (uniqueness scale), estimated pair precision "
        f"{choice.precision:.3f} (target {choice.target_precision}) and recall {choice.recall:.3f} of the edited copies. "
        f"Negatives are each image's nearest different content among all {population_size}, and two pairs of different pictures "
        f"cut from each sampled image (its halves, its opposite quarters); {len(outcome.pairs.excluded)} contents were "
        "left out as the user's own duplicates of a sampled image (identical or pHash match). Scoring uses this value from the next "
        "run on unless the threshold is pinned."
    )

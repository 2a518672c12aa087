"""Dedup policy: thresholds, keep policy and what happens to near-duplicates."""
from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pandas as pd

from core.calibration import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    DEFAULT_TARGET_PRECISION,
    calibrated_threshold,
)
from core.scoring import Thresholds
from core.search.signals import HashSignal

SOURCE_PINNED = "pinned"
SOURCE_CALIBRATED = "calibrated"
SOURCE_DEFAULT = "default"


@dataclass(frozen=True)
class ThresholdsInForce:
    """The label thresholds a run uses, and where the near-duplicate one comes from.

    Attributes:
        thresholds: the label thresholds.
        source: `pinned` (set by the user), `calibrated` (stored for this model id) or `default`.
        model_id: the embedding model they apply to (None when unknown).
        calibration: the stored calibration record when `source` is `calibrated`, else None.
    """

    thresholds: Thresholds
    source: str
    model_id: str | None = None
    calibration: dict | None = None

    def describe(self) -> str:
        """One line for the UI and the CLI, e.g. `0.0708 (calibrated for <model> on 78 images, ...)`."""
        value = f"{self.thresholds.near_duplicate:g}"
        if self.source == SOURCE_CALIBRATED:
            record = self.calibration or {}
            return (
                f"{value} (calibrated for {self.model_id} on {record.get('sample_size', '?')} images at target precision "
                f"{record.get('target_precision', '?')}, {record.get('calibrated_at', '?')})"
            )
        if self.source == SOURCE_PINNED:
            return f"{value} (pinned by the settings)"
        return f"{value} (default; no calibration stored for {self.model_id}: materialize embedding_thresholds or run `imgdedup calibrate`)"


class DedupPolicyResource(dg.ConfigurableResource):
    """Settings shared by scoring, grouping and the checks (SPEC.md defaults).

    Attributes:
        duplicate_threshold: uniqueness <= this is `duplicate`.
        near_duplicate_threshold: uniqueness <= this is `near_duplicate`. None (default) = not
            pinned: the value calibrated for the model (`thresholds_file`), else 0.05 (cosine 0.9).
        keep_policy: `resolution`, `first_seen` or `path`.
        near_duplicate_action: `remove` (default) or `review` (kept in the clean set, listed).
        max_duplicate_fraction: the raw-data gate: more duplicates than this blocks training.
        hash_threshold_bits: rotation/flip-invariant pHash distance (bits) that counts as exactly
            at the near-duplicate threshold when fused with the embedding distance; 0 turns the
            hash signal off.
        thresholds_file: JSON of calibrated thresholds per model id (written by the
            `embedding_thresholds` asset and `imgdedup calibrate`); None = never use calibration.
        model_id: the configured embedding model's id, whose calibration applies.
        calibration_sample_size, calibration_seed, target_precision: how `embedding_thresholds`
            calibrates (distinct images sampled, seed of the sample and the edits, estimated pair
            precision to reach).
        neighbor_search: the embedding search: `auto` (default: an index from 250k contents when
            faiss-cpu is installed), `exact` or `index` (`core.scoring.find_content_neighbors`);
            pHash matches are always found exactly.
        check_turned_copies: prove copies turned by an arbitrary angle with black corners by
            local features (`core.rotated_copies`); False leaves them to the embedding and pHash.
    """

    duplicate_threshold: float = 1e-4
    near_duplicate_threshold: float | None = None
    keep_policy: str = "resolution"
    near_duplicate_action: str = "remove"
    max_duplicate_fraction: float = 0.5
    hash_threshold_bits: int = 10
    thresholds_file: str | None = None
    model_id: str | None = None
    calibration_sample_size: int = DEFAULT_SAMPLE_SIZE
    calibration_seed: int = DEFAULT_SEED
    target_precision: float = DEFAULT_TARGET_PRECISION
    neighbor_search: str = "auto"
    check_turned_copies: bool = True

    def hash_signal(self, raw_images: pd.DataFrame) -> HashSignal | None:
        """The pHash signal over the images' contents, or None when it is switched off."""
        if self.hash_threshold_bits <= 0:
            return None
        per_content = raw_images.drop_duplicates("pixel_hash").set_index("pixel_hash")["phashes"]
        return HashSignal(per_content.to_dict(), self.hash_threshold_bits)

    def thresholds_in_force(self, model_id: str | None = None) -> ThresholdsInForce:
        """The thresholds for `model_id` (default: the configured model): the pinned value, else the
        calibrated one, else SPEC.md's default.

        Raises:
            ValueError: the thresholds file is unreadable, or the resulting thresholds are invalid
                (e.g. a calibrated value below the duplicate threshold).
        """
        model_id = model_id or self.model_id
        if self.near_duplicate_threshold is not None:
            return ThresholdsInForce(Thresholds(self.duplicate_threshold, self.near_duplicate_threshold), SOURCE_PINNED, model_id=model_id)
        stored = calibrated_threshold(self.thresholds_file, model_id) if self.thresholds_file else None
        if stored is not None:
            value, record = stored
            try:
                thresholds = Thresholds(self.duplicate_threshold, value)
            except ValueError as exc:
                raise ValueError(f"the threshold calibrated for {model_id} in {self.thresholds_file} does not fit the duplicate threshold: {exc}") from exc
            return ThresholdsInForce(thresholds, SOURCE_CALIBRATED, model_id=model_id, calibration=record)
        return ThresholdsInForce(Thresholds(self.duplicate_threshold, DEFAULT_NEAR_DUPLICATE_THRESHOLD), SOURCE_DEFAULT, model_id=model_id)

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in force for the configured model (see `thresholds_in_force`)."""
        return self.thresholds_in_force().thresholds

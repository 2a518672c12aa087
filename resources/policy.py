"""Dedup policy: thresholds, keep policy and what happens to near-duplicates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from imgdedup_pipeline.core.calibration import DEFAULT_NEAR_DUPLICATE_THRESHOLD, calibrated_threshold
from imgdedup_pipeline.core.scoring import Thresholds
from imgdedup_pipeline.core.search.signals import HashSignal
from imgdedup_pipeline.core.settings import KeepPolicy, NearDuplicateAction, NeighborSearch, setting

if TYPE_CHECKING:
    from imgdedup_pipeline.core.calibration_run import CalibrationSettings

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
    """Settings shared by scoring, grouping and the checks (SPEC.md defaults). The fields named as
    in `core.settings.Settings` take their type, default, bounds and description from it.

    Attributes:
        duplicate_threshold, near_duplicate_threshold, keep_policy, near_duplicate_action,
            max_duplicate_fraction, hash_threshold_bits, calibration_sample_size,
            calibration_seed, target_precision, neighbor_search: see `Settings`.
        thresholds_file: JSON of calibrated thresholds per model id (written by the
            `embedding_thresholds` asset and `imgdedup calibrate`); None = never use calibration.
        model_id: the model whose calibration `thresholds_in_force()` looks up when it is not told
            one; None (default): the assets pass the model id of the vectors they read, so the
            embedding model's config alone decides it.
        check_turned_copies: prove copies turned by an arbitrary angle with black corners by
            local features (`core.rotated_copies`); False leaves them to the embedding and pHash.
    """

    duplicate_threshold: float = setting("duplicate_threshold")
    near_duplicate_threshold: float | None = setting("near_duplicate_threshold")
    keep_policy: KeepPolicy = setting("keep_policy")
    near_duplicate_action: NearDuplicateAction = setting("near_duplicate_action")
    max_duplicate_fraction: float = setting("max_duplicate_fraction")
    hash_threshold_bits: int = setting("hash_threshold_bits")
    thresholds_file: str | None = None
    model_id: str | None = None
    calibration_sample_size: int = setting("calibration_sample_size")
    calibration_seed: int = setting("calibration_seed")
    target_precision: float = setting("target_precision")
    neighbor_search: NeighborSearch = setting("neighbor_search")
    check_turned_copies: bool = True

    def hash_signal(self, raw_images: pd.DataFrame) -> HashSignal | None:
        """The pHash signal over the images' contents, or None when it is switched off."""
        if self.hash_threshold_bits <= 0:
            return None
        return HashSignal.from_catalog(raw_images, self.hash_threshold_bits)

    def calibration_settings(self, batch_size: int, force: bool = False) -> CalibrationSettings:
        """The values `core.calibration_run.calibrate_catalog` reads, with the model's `batch_size`."""
        from imgdedup_pipeline.core.calibration_run import CalibrationSettings

        if self.thresholds_file is None:
            raise ValueError("calibration needs policy.thresholds_file: where the calibrated thresholds are stored")
        return CalibrationSettings(
            thresholds_file=self.thresholds_file,
            sample_size=self.calibration_sample_size,
            seed=self.calibration_seed,
            target_precision=self.target_precision,
            hash_threshold_bits=self.hash_threshold_bits,
            duplicate_threshold=self.duplicate_threshold,
            batch_size=batch_size,
            force=force,
        )

    def thresholds_in_force(self, model_id: str | None = None) -> ThresholdsInForce:
        """The thresholds for `model_id` (default: the configured model): the pinned value, else the
        calibrated one, else SPEC.md's default.

        Raises:
            ValueError: the thresholds file is unreadable, or the resulting thresholds are invalid
                (e.g. a calibrated value below the duplicate threshold).
        """
        model_id = model_id or self.model_id
        if self.near_duplicate_threshold is not None:
            return ThresholdsInForce(
                Thresholds(self.duplicate_threshold, self.near_duplicate_threshold), SOURCE_PINNED, model_id=model_id
            )
        stored = calibrated_threshold(self.thresholds_file, model_id) if self.thresholds_file else None
        if stored is not None:
            value, record = stored
            try:
                thresholds = Thresholds(self.duplicate_threshold, value)
            except ValueError as exc:
                raise ValueError(
                    f"the threshold calibrated for {model_id} in {self.thresholds_file} does not fit the duplicate threshold: {exc}"
                ) from exc
            return ThresholdsInForce(thresholds, SOURCE_CALIBRATED, model_id=model_id, calibration=record)
        return ThresholdsInForce(
            Thresholds(self.duplicate_threshold, DEFAULT_NEAR_DUPLICATE_THRESHOLD), SOURCE_DEFAULT, model_id=model_id
        )

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in force for the configured model (see `thresholds_in_force`)."""
        return self.thresholds_in_force().thresholds

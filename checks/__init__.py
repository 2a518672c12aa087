"""Asset checks (Great Expectations suites inside Dagster checks); one module per checked asset."""

from __future__ import annotations

from imgdedup_pipeline.checks.clean_dataset import CLEAN_DATASET_CHECKS
from imgdedup_pipeline.checks.uniqueness_scores import UNIQUENESS_SCORES_CHECKS


def all_checks() -> list:
    """Every asset check of the dedup graph, all blocking: the score checks hold back everything after
    the scores, the clean-dataset gates hold back training (`training_manifest`)."""
    return [*UNIQUENESS_SCORES_CHECKS, *CLEAN_DATASET_CHECKS]

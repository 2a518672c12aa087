"""Dedup policy: thresholds, keep policy and what happens to near-duplicates."""

import dagster as dg

from core.scoring import Thresholds


class DedupPolicyResource(dg.ConfigurableResource):
    """Settings shared by scoring, grouping and the checks (SPEC.md defaults).

    Attributes:
        duplicate_threshold: uniqueness <= this is `duplicate`.
        near_duplicate_threshold: uniqueness <= this is `near_duplicate` (0.05 = cosine 0.9).
        keep_policy: `resolution`, `first_seen` or `path`.
        near_duplicate_action: `remove` (default) or `review` (kept in the clean set, listed).
        max_duplicate_fraction: the raw-data gate: more duplicates than this blocks training.
    """

    duplicate_threshold: float = 1e-4
    near_duplicate_threshold: float = 0.05
    keep_policy: str = "resolution"
    near_duplicate_action: str = "remove"
    max_duplicate_fraction: float = 0.5

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(duplicate=self.duplicate_threshold, near_duplicate=self.near_duplicate_threshold)

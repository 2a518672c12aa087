"""Dedup policy: thresholds, keep policy and what happens to near-duplicates."""

import dagster as dg

import pandas as pd

from core.scoring import HashSignal, Thresholds


class DedupPolicyResource(dg.ConfigurableResource):
    """Settings shared by scoring, grouping and the checks (SPEC.md defaults).

    Attributes:
        duplicate_threshold: uniqueness <= this is `duplicate`.
        near_duplicate_threshold: uniqueness <= this is `near_duplicate` (0.05 = cosine 0.9).
        keep_policy: `resolution`, `first_seen` or `path`.
        near_duplicate_action: `remove` (default) or `review` (kept in the clean set, listed).
        max_duplicate_fraction: the raw-data gate: more duplicates than this blocks training.
        hash_threshold_bits: rotation/flip-invariant pHash distance (bits) that counts as exactly
            at the near-duplicate threshold when fused with the embedding distance; 0 turns the
            hash signal off.
    """

    duplicate_threshold: float = 1e-4
    near_duplicate_threshold: float = 0.05
    keep_policy: str = "resolution"
    near_duplicate_action: str = "remove"
    max_duplicate_fraction: float = 0.5
    hash_threshold_bits: int = 10

    def hash_signal(self, raw_images: pd.DataFrame) -> HashSignal | None:
        """The pHash signal over the images' contents, or None when it is switched off."""
        if self.hash_threshold_bits <= 0:
            return None
        per_content = raw_images.drop_duplicates("pixel_hash").set_index("pixel_hash")["phashes"]
        return HashSignal(per_content.to_dict(), self.hash_threshold_bits)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(duplicate=self.duplicate_threshold, near_duplicate=self.near_duplicate_threshold)

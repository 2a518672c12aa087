"""SPEC.md's uniqueness score and labels.

`uniqueness` lies in [0, 1]; 1 means unique. Identical copies score exactly 0 except one keeper per
identical group; every other image scores half the cosine distance to its nearest image outside
its identical group, floored at 1e-9. The neighbours come from `core.search` (which engine ran,
and whether a cache was reused, is none of this module's business).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.distances import to_cosine_distance, to_uniqueness

if TYPE_CHECKING:
    from imgdedup_pipeline.core.search.contents import ContentNeighbors

MIN_NONZERO_UNIQUENESS = 1e-9

LABEL_DUPLICATE = "duplicate"
LABEL_NEAR_DUPLICATE = "near_duplicate"
LABEL_UNIQUE = "unique"
LABELS = (LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, LABEL_UNIQUE)


@dataclass(frozen=True)
class Thresholds:
    """Label thresholds on the uniqueness scale (half the cosine distance).

    Attributes:
        duplicate: uniqueness <= this is `duplicate` (default 1e-4).
        near_duplicate: uniqueness <= this (and above `duplicate`) is `near_duplicate` (default
            0.05, i.e. cosine similarity 0.9).
    """

    duplicate: float = 1e-4
    near_duplicate: float = 0.05

    def __post_init__(self):
        if not (0.0 <= self.duplicate < self.near_duplicate <= 1.0):
            raise ValueError(
                f"thresholds must satisfy 0 <= duplicate < near_duplicate <= 1, got duplicate={self.duplicate}, "
                f"near_duplicate={self.near_duplicate}; fix the duplicate/near-duplicate threshold settings"
            )

    @property
    def near_duplicate_cosine_distance(self) -> float:
        return to_cosine_distance(self.near_duplicate)


def label_for(uniqueness: float, thresholds: Thresholds) -> str:
    """Label of one uniqueness value: duplicate, near_duplicate or unique."""
    if uniqueness <= thresholds.duplicate:
        return LABEL_DUPLICATE
    if uniqueness <= thresholds.near_duplicate:
        return LABEL_NEAR_DUPLICATE
    return LABEL_UNIQUE


def compute_uniqueness_scores(
    images: pd.DataFrame, neighbors: ContentNeighbors, keep_rank: pd.Series, thresholds: Thresholds
) -> pd.DataFrame:
    """Score every image by SPEC.md's rules.

    Args:
        images: one row per image with columns image_id, path, pixel_hash.
        neighbors: `find_content_neighbors` over the images' pixel hashes.
        keep_rank: image_id -> position in keep-policy order (0 = kept first).
        thresholds: label thresholds.

    Returns:
        A new DataFrame, one row per image sorted by path, with columns image_id, path, pixel_hash,
        identical_group (pixel hash naming the identical group), identical_group_size, uniqueness
        (float64), label, nearest_path (nearest image outside the identical group, or None).
    """
    row_of_hash = {h: i for i, h in enumerate(neighbors.pixel_hashes)}
    # Sorted first, not at the end: sorting the finished table would copy every column once more.
    scores = images[["image_id", "path", "pixel_hash"]].sort_values("path", ignore_index=True)
    content_row = np.fromiter((row_of_hash.get(h, -1) for h in scores["pixel_hash"]), np.int64, count=len(scores))
    if (content_row < 0).any():
        missing = set(scores["pixel_hash"][content_row < 0])
        raise ValueError(
            f"{len(missing)} pixel hashes have no embedding (e.g. {sorted(missing)[:3]}); embed them before scoring"
        )
    del row_of_hash
    group_row = neighbors.identical_group[content_row]
    scores["identical_group"] = neighbors.pixel_hashes[group_row]
    scores["_rank"] = scores["image_id"].map(keep_rank).to_numpy()
    if scores["_rank"].isna().any():
        raise ValueError("keep_rank is missing some image ids; rank every image with keep_policy_order")
    # Grouped by the group's row number, one to one with its pixel hash and cheaper to hash.
    by_group = scores.groupby(group_row)
    scores["identical_group_size"] = by_group["image_id"].transform("size")
    is_keeper = scores["_rank"] == by_group["_rank"].transform("min")
    del by_group

    nearest_distance = neighbors.nearest_distance[content_row].astype(np.float64)
    has_other = np.isfinite(nearest_distance)
    uniqueness = np.where(has_other, np.maximum(to_uniqueness(nearest_distance), MIN_NONZERO_UNIQUENESS), 1.0)
    scores["uniqueness"] = np.where(is_keeper, uniqueness, 0.0)
    scores["label"] = [label_for(u, thresholds) for u in scores["uniqueness"]]

    # The nearest image outside the group: its keeper, so that the name is stable across runs.
    # By row numbers, not a table of keepers keyed by pixel hash: no per-image copy of the table.
    keeper_row = np.full(len(neighbors.pixel_hashes), -1, dtype=np.int64)
    keeper_row[group_row[is_keeper]] = np.flatnonzero(is_keeper)
    nearest_rows = neighbors.nearest_row[content_row]
    nearest_keeper = keeper_row[neighbors.identical_group[np.maximum(nearest_rows, 0)]]
    named = has_other & (nearest_rows >= 0) & (nearest_keeper >= 0)
    nearest_path = np.full(len(scores), None, dtype=object)
    nearest_path[named] = scores["path"].array.take(nearest_keeper[named]).to_numpy(dtype=object)
    scores["nearest_path"] = nearest_path
    return scores.drop(columns="_rank")

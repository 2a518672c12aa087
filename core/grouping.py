"""Keep policy, leader-assignment groups and the duplicates / clean collections (SPEC.md)."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal, get_args

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.distances import to_cosine_distance, to_uniqueness
from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, Thresholds

KeepPolicy = Literal["resolution", "first_seen", "path"]
KEEP_POLICIES: tuple[KeepPolicy, ...] = get_args(KeepPolicy)
NearDuplicateAction = Literal["remove", "review"]
NEAR_DUPLICATE_ACTIONS: tuple[NearDuplicateAction, ...] = get_args(NearDuplicateAction)
OVERRIDE_KEEP, OVERRIDE_REMOVE = "keep", "remove"


def keep_policy_order(
    images: pd.DataFrame, policy: str = "resolution", overrides: dict[str, str] | None = None
) -> pd.Series:
    """Rank images by which one should survive: rank 0 is kept first.

    Args:
        images: columns image_id, path, width, height, content_pixels, bytes, first_seen.
        policy: `resolution` (most content pixels after trimming uniform borders, then less
            border, then larger file, then earliest first_seen, then path), `first_seen` (earliest, then path) or `path`.
        overrides: path -> "keep" | "remove" from the human review file; pinned keeps rank before
            everything, pinned removals after everything.

    Returns:
        Series image_id -> rank (int), deterministic for a given set of images.
    """
    if policy not in KEEP_POLICIES:
        raise ValueError(f"unknown keep policy {policy!r}; expected one of {', '.join(KEEP_POLICIES)}")
    overrides = overrides or {}
    ordered = images[["image_id", "path"]].copy()
    pin = images["path"].map(overrides)
    ordered["_pin"] = np.select([pin == OVERRIDE_KEEP, pin == OVERRIDE_REMOVE], [0, 2], default=1)
    if policy == "resolution":
        ordered["_pixels"] = -images["content_pixels"].astype("int64")
        # Equal content: the copy with less uniform border wins, so a letterboxed copy (whose
        # padding also makes its file larger) never beats its original.
        ordered["_border"] = images["width"].astype("int64") * images["height"].astype("int64") - images[
            "content_pixels"
        ].astype("int64")
        ordered["_bytes"] = -images["bytes"].astype("int64")
        ordered["_seen"] = images["first_seen"]
        keys = ["_pin", "_pixels", "_border", "_bytes", "_seen", "path"]
    elif policy == "first_seen":
        ordered["_seen"] = images["first_seen"]
        keys = ["_pin", "_seen", "path"]
    else:
        keys = ["_pin", "path"]
    ordered = ordered.sort_values(keys, kind="mergesort", ignore_index=True)
    return pd.Series(np.arange(len(ordered)), index=ordered["image_id"].to_numpy(), name="keep_rank")


def assign_groups(
    scores: pd.DataFrame,
    close_pairs: pd.DataFrame,
    keep_rank: pd.Series,
    thresholds: Thresholds,
    near_duplicate_action: str = "remove",
    overrides: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Form duplicate / near-duplicate groups by leader assignment and decide what is removed.

    Walk images in keep order; an unassigned image becomes a leader (keeper) and every unassigned
    image within the near-duplicate threshold of the leader joins its group. Unlike connected
    components, A~B~C does not chain A and C together.

    Args:
        scores: output of `compute_uniqueness_scores` (image_id, path, pixel_hash, identical_group).
        close_pairs: [left_hash, right_hash, distance] content pairs within the radius
            (`ContentNeighbors.pairs_by_hash`), cosine distance.
        keep_rank: image_id -> rank from `keep_policy_order`.
        thresholds: the label thresholds; group membership uses `near_duplicate`.
        near_duplicate_action: `remove` near-duplicate members too, or leave them for `review`.
        overrides: path -> "keep" | "remove" (human review file); overrides win over the policy.

    Returns:
        A new DataFrame, one row per image sorted by path: image_id, path, group_id (leader's
        image_id, None for singletons), group_keeper (leader's path), relation (duplicate /
        near_duplicate / None), pair_uniqueness (half the distance to the keeper), removed (bool),
        duplicate_of (keeper's path when removed), reason.
    """
    if near_duplicate_action not in NEAR_DUPLICATE_ACTIONS:
        raise ValueError(
            f"unknown near_duplicate_action {near_duplicate_action!r}; expected one of {NEAR_DUPLICATE_ACTIONS}"
        )
    overrides = overrides or {}
    group_of_hash = dict(zip(scores["pixel_hash"], scores["identical_group"]))
    radius = thresholds.near_duplicate_cosine_distance

    # Adjacency between identical groups within the radius (distance = closest member pair).
    close: dict[str, dict[str, float]] = defaultdict(dict)
    for left_hash, right_hash, distance in close_pairs.itertuples(index=False):
        group_left, group_right = group_of_hash.get(left_hash), group_of_hash.get(right_hash)
        if distance > radius or group_left is None or group_right is None or group_left == group_right:
            continue
        for a, b in ((group_left, group_right), (group_right, group_left)):
            close[a][b] = min(float(distance), close[a].get(b, np.inf))

    images = scores[["image_id", "path", "identical_group"]].copy()
    images["_rank"] = images["image_id"].map(keep_rank).to_numpy()
    images = images.sort_values("_rank", ignore_index=True)
    images_by_group = images.groupby("identical_group", sort=False)["image_id"].apply(list).to_dict()
    path_of = dict(zip(images["image_id"], images["path"]))

    leader_of: dict[str, str] = {}
    distance_to_leader: dict[str, float] = {}
    for image_id, group in zip(images["image_id"], images["identical_group"]):
        if image_id in leader_of:
            continue
        leader_of[image_id], distance_to_leader[image_id] = image_id, 0.0
        candidates = [(member, 0.0) for member in images_by_group[group]]
        for other_group, distance in close[group].items():
            candidates.extend((member, distance) for member in images_by_group[other_group])
        for member, distance in candidates:
            if member not in leader_of:
                leader_of[member], distance_to_leader[member] = image_id, distance

    group_sizes = pd.Series(leader_of).value_counts()
    rows = []
    for image_id, path in zip(images["image_id"], images["path"]):
        leader = leader_of[image_id]
        in_group = group_sizes[leader] > 1
        pair_uniqueness = to_uniqueness(distance_to_leader[image_id])
        relation = None
        if in_group and image_id != leader:
            relation = LABEL_DUPLICATE if pair_uniqueness <= thresholds.duplicate else LABEL_NEAR_DUPLICATE
        removed, reason = _decide_removal(
            in_group, relation, pair_uniqueness, path_of[leader], near_duplicate_action, overrides.get(path)
        )
        rows.append(
            {
                "image_id": image_id,
                "path": path,
                "group_id": leader if in_group else None,
                "group_keeper": path_of[leader] if in_group else None,
                "relation": relation,
                "pair_uniqueness": pair_uniqueness if relation else None,
                "removed": removed,
                "duplicate_of": path_of[leader] if removed and relation else None,
                "reason": reason,
            }
        )
    if near_duplicate_action == "review":
        _remove_duplicates_among_reviewed(
            rows, images["identical_group"].tolist(), close, to_cosine_distance(thresholds.duplicate), overrides
        )
    columns = [
        "image_id",
        "path",
        "group_id",
        "group_keeper",
        "relation",
        "pair_uniqueness",
        "removed",
        "duplicate_of",
        "reason",
    ]
    # Columns named: with no image at all (an empty root) the table still has them.
    return pd.DataFrame(rows, columns=columns).astype({"removed": bool}).sort_values("path", ignore_index=True)


def _remove_duplicates_among_reviewed(rows, identical_groups, close, duplicate_distance, overrides):
    """In review mode near-duplicates stay in the clean set, but two kept images must never be
    duplicates of each other: a reviewed image within the duplicate threshold of an image that is
    already kept is removed as its duplicate. `rows` are in keep order and updated in place."""
    reviewed = [
        i
        for i, row in enumerate(rows)
        if not row["removed"]
        and row["relation"] == LABEL_NEAR_DUPLICATE
        and overrides.get(row["path"]) != OVERRIDE_KEEP
    ]
    reviewed_set = set(reviewed)
    kept_path_by_group = {}
    for i, row in enumerate(rows):
        if not row["removed"] and i not in reviewed_set:
            kept_path_by_group.setdefault(identical_groups[i], row["path"])
    for i in reviewed:
        own = identical_groups[i]
        clash = next(
            (
                g
                for g, d in sorted(close[own].items(), key=lambda item: item[1])
                if d <= duplicate_distance and g in kept_path_by_group
            ),
            None,
        )
        if clash is None:
            kept_path_by_group.setdefault(own, rows[i]["path"])
            continue
        keeper = kept_path_by_group[clash]
        rows[i].update(
            removed=True,
            relation=LABEL_DUPLICATE,
            duplicate_of=keeper,
            reason=f"duplicate of {keeper}, which is kept ({pair_distance_text(to_uniqueness(close[own][clash]))})",
        )


def pair_distance_text(pair_uniqueness: float) -> str:
    """The distance between a row and its keeper, on the uniqueness scale. It is the pair's
    distance, not the row's score (which is floored at 1e-9), so it is named apart from it."""
    return f"distance to it {pair_uniqueness:.3g}"


def _decide_removal(in_group, relation, pair_uniqueness, keeper_path, near_duplicate_action, override):
    if override == OVERRIDE_KEEP:
        return False, "kept: pinned to keep in the review file"
    if override == OVERRIDE_REMOVE:
        return True, "removed: pinned to remove in the review file"
    if relation is None:
        return False, "kept: keeper of its group" if in_group else "kept: no duplicate"
    if relation == LABEL_DUPLICATE:
        return True, f"duplicate of {keeper_path} ({pair_distance_text(pair_uniqueness)})"
    if near_duplicate_action == "remove":
        return True, f"near-duplicate of {keeper_path} ({pair_distance_text(pair_uniqueness)})"
    return False, f"kept for review: near-duplicate of {keeper_path} ({pair_distance_text(pair_uniqueness)})"

"""The scoring stage's work without Dagster: neighbour search over the contents, the keep ranking
and SPEC.md's uniqueness score per image (`score_images`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.catalog import path_per_content
from imgdedup_pipeline.core.grouping import keep_policy_order
from imgdedup_pipeline.core.rotated_copies import RotatedCopySignal
from imgdedup_pipeline.core.scoring import Thresholds, compute_uniqueness_scores
from imgdedup_pipeline.core.search.cache import SearchCache
from imgdedup_pipeline.core.search.contents import ContentVectors, find_content_neighbors
from imgdedup_pipeline.core.search.signals import HashSignal

# Columns the scores carry so that grouping (`collect_duplicates`) uses this run's one ranking
# and one reading of the review file, not a second one that an edit mid-run could make differ.
KEEP_RANK_COLUMN = "keep_rank"
REVIEW_PIN_COLUMN = "review_pin"


@dataclass(frozen=True)
class ScoredImages:
    """What `score_images` returns.

    Attributes:
        scores: `compute_uniqueness_scores`'s table plus `keep_rank` (int, 0 = kept first) and
            `review_pin` ("keep" / "remove" from the review file, else None).
        pairs: [left_hash, right_hash, distance] content pairs within the radius.
        search_modes: signal -> how it searched, e.g. "exact, 3 of 10 contents searched".
    """

    scores: pd.DataFrame
    pairs: pd.DataFrame
    search_modes: dict[str, str]


def without_changed(raw_images: pd.DataFrame, changed_during_run: Mapping[str, object]) -> pd.DataFrame:
    """The catalog rows that can be scored: files that changed after the catalog have no vector in
    this run (keys of `changed_during_run` are their pixel hashes); they are rejected, not scored."""
    return raw_images[~raw_images["pixel_hash"].isin(changed_during_run.keys())]


def rotated_copy_signal(raw_images: pd.DataFrame, load_rgb: Callable, warn: Callable[[str], None]) -> RotatedCopySignal:
    """The turned-copy check for the catalog's contents with turned black corners, reading each
    content from the file embedded for it with `load_rgb(path, draft_size=...)`. A catalog made
    before the turn was read into it proves no turned copy, and `warn` says so."""
    path_of = path_per_content(raw_images)
    if "turned_degrees" not in raw_images.columns:
        warn(
            "the image catalog predates its turned_degrees column, so no copy turned on its canvas is "
            "proven in this run: materialize raw_images again (a run of the whole job does) to check them"
        )
        raw_images = raw_images.assign(turned_degrees=float("nan"))
    turned = raw_images[raw_images["turned_degrees"].notna()]
    return RotatedCopySignal(
        lambda pixel_hash, draft: load_rgb(path_of[pixel_hash], draft_size=draft),
        dict(zip(turned["pixel_hash"], turned["turned_degrees"].astype(float))),
    )


def score_images(
    raw_images: pd.DataFrame,
    vectors: ContentVectors | Mapping[str, np.ndarray] | Callable[[], ContentVectors],
    thresholds: Thresholds,
    *,
    keep_policy: str,
    review_pins: Mapping[str, str],
    hash_signal: HashSignal | None,
    engine: str,
    cache_file: Path,
    warn: Callable[[str], None],
    load_rgb: Callable | None = None,
) -> ScoredImages:
    """Search the contents' neighbours, rank the images once and score them.

    Args:
        raw_images: catalog rows to score (`without_changed`).
        vectors: the embedding of every content of `raw_images` (ContentVectors, or pixel hash ->
            vector), or a function that reads them: it is called after the pHash search
            (`find_content_neighbors`), nothing holds the (M, D) matrix once the search is done,
            and it is freed before the scores are built (~2.9 GiB at 1M x 768).
        thresholds: the label thresholds in force; the search radius is the near-duplicate one.
        keep_policy: `core.grouping.KEEP_POLICIES`.
        review_pins: path -> keep/remove from the review file, read once for the run.
        hash_signal: perceptual hashes per content, or None.
        engine: the neighbour search setting (`exact`, `index`, `auto`).
        cache_file: the last run's embedding search for this model's table; only new contents
            (and those that lost a neighbour) are searched again. A cache that does not fit is ignored.
        warn: told about a damaged cache file, or a catalog without the turned-copy check's column.
        load_rgb: with it, the turned-copy check runs, loading images through it.

    Returns:
        `ScoredImages`: scores (one row per image, sorted by path), pairs and the search summary.
    """
    neighbors = find_content_neighbors(
        vectors,
        radius=thresholds.near_duplicate_cosine_distance,
        hash_signal=hash_signal,
        cache=SearchCache(cache_file, warn),
        engine=engine,
        rotated_copy_signal=rotated_copy_signal(raw_images, load_rgb, warn) if load_rgb is not None else None,
    )
    search_modes = {
        signal: f"{u.mode}, {u.searched_rows} of {len(neighbors.pixel_hashes)} contents searched"
        + (f" ({u.reason})" if u.reason else "")
        for signal, u in neighbors.updates.items()
    }
    keep_rank = keep_policy_order(raw_images, keep_policy, dict(review_pins))
    scores = compute_uniqueness_scores(raw_images, neighbors, keep_rank, thresholds)
    scores[KEEP_RANK_COLUMN] = scores["image_id"].map(keep_rank).astype("int64")
    scores[REVIEW_PIN_COLUMN] = scores["path"].map(review_pins).astype(object)
    scores[REVIEW_PIN_COLUMN] = scores[REVIEW_PIN_COLUMN].where(scores[REVIEW_PIN_COLUMN].notna(), None)
    return ScoredImages(scores, neighbors.pairs_by_hash(), search_modes)


def ranking_of(scores: pd.DataFrame) -> tuple[pd.Series, dict[str, str]]:
    """The keep ranking (image_id -> rank) and review pins (path -> keep/remove) that `score_images`
    put on the scores, for grouping with the very ranking the scores were made with."""
    keep_rank = scores.set_index("image_id")[KEEP_RANK_COLUMN].rename("keep_rank")
    pinned = scores[scores[REVIEW_PIN_COLUMN].notna()]
    return keep_rank, dict(zip(pinned["path"], pinned[REVIEW_PIN_COLUMN]))

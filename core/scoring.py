"""SPEC.md's uniqueness score and labels.

`uniqueness` lies in [0, 1]; 1 means unique. Identical copies score exactly 0 except one keeper per
identical group; every other image scores half the cosine distance to its nearest image outside
its identical group, floored at 1e-9.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.distances import cosine_distance, to_cosine_distance, to_uniqueness
from core.hash_index import plan_substrings, search_hash_neighbors_within
from core.images import informative_phashes
from core.neighbor_cache import KeyedSearch, SearchUpdate, update_search
from core.rotated_copies import RotatedCopySignal
from core.rotated_copies import vouched_distances_from as turned_vouched_distances_from
from core.neighbors import (
    NeighborSearch,
    cosine_distances_from,
    hamming_distances_from,
    l2_normalize,
    merge_searches,
    nearest_outside_group,
    scaled,
    search_neighbors,
)

# How the embeddings' neighbours are searched: `exact` (chunked exact search, incremental between
# runs), `index` (an IVF index, `core.ann`) or `auto`: the index from INDEX_MIN_CONTENTS up.
# The pHashes need only the pairs within their cutoff (SPEC.md), which both of their searches find
# exactly; `core.hash_index` takes whichever it estimates cheaper, whatever the setting.
SEARCH_ENGINES = ("auto", "exact", "index")
# Exact search at 100k contents takes 12-17 s on this 2-core machine, growing as N^2 (~1.5 min at
# 250k); the index 14 s at 100k, 117 s at 1M (BENCHMARKS.md), with recall < 1.
INDEX_MIN_CONTENTS = 250_000
IDENTICAL_COSINE_DISTANCE = 1e-5  # below this, two vectors are float noise of the same content
MIN_NONZERO_UNIQUENESS = 1e-9
NEIGHBORS_PER_ROW = 16

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


def _union_find_labels(size: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    parent = np.arange(size)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(left.tolist(), right.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    return np.array([find(x) for x in range(size)], dtype=np.int64)


@dataclass(frozen=True)
class ContentVectors:
    """Embeddings of distinct contents, one row per pixel hash.

    Attributes:
        hashes: (M,) pixel hashes, sorted ascending, unique.
        matrix: (M, D) float32 L2-normalised rows; row i is hashes[i]'s vector.
    """

    hashes: np.ndarray
    matrix: np.ndarray

    def __post_init__(self):
        if len(self.hashes) != len(self.matrix):
            raise ValueError(f"{len(self.hashes)} hashes for {len(self.matrix)} vectors")

    @classmethod
    def from_mapping(cls, vectors_by_hash: Mapping[str, np.ndarray] | pd.Series) -> "ContentVectors":
        """Sort by hash, stack and L2-normalise (any float dtype)."""
        hashes = np.array(sorted(vectors_by_hash.keys()), dtype=object)
        if len(hashes) == 0:
            return cls(hashes, np.empty((0, 0), np.float32))
        return cls(hashes, l2_normalize(np.stack([np.asarray(vectors_by_hash[h], dtype=np.float32) for h in hashes])))


def choose_search_engine(engine: str, contents: int, index_available: bool | None = None, min_contents: int | None = None) -> tuple[str, str]:
    """(`exact` or `index`, why) for the embedding search over `contents` rows.

    `auto` takes the index from `min_contents` (default INDEX_MIN_CONTENTS) contents up when it is
    available (`index_available`; None: whether faiss-cpu is installed, looked up only when it
    matters), else the exact search, with the reason saying how to get the index; `index` when it
    is not available is an error that names the fix.
    """
    min_contents = INDEX_MIN_CONTENTS if min_contents is None else min_contents
    if engine not in SEARCH_ENGINES:
        raise ValueError(f"unknown neighbour search {engine!r}: use one of {', '.join(SEARCH_ENGINES)}")
    if engine == "exact":
        return "exact", "configured"
    if engine == "auto" and contents < min_contents:
        return "exact", f"auto: {contents} contents < {min_contents}"
    if not (faiss_installed() if index_available is None else index_available):
        if engine == "index":
            raise ImportError("neighbor_search=index needs faiss-cpu: pip install 'imgdedup[scale]' (or choose neighbor_search=exact)")
        return "exact", f"auto: {contents} contents, but faiss-cpu is not installed (pip install 'imgdedup[scale]' for the index)"
    return "index", "configured" if engine == "index" else f"auto: {contents} contents >= {min_contents}"


def faiss_installed() -> bool:
    """Whether the embedding index can run here (faiss-cpu importable)."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


@dataclass(frozen=True)
class ContentNeighbors:
    """Neighbour structure over distinct contents (one row per pixel hash, sorted by hash).

    Attributes:
        pixel_hashes: (M,) sorted distinct pixel hashes.
        identical_group: (M,) int64, the smallest row index of the row's identical group.
        nearest_row / nearest_distance: nearest row outside the identical group (-1 / inf if none).
        pairs: DataFrame [left, right, distance] of rows within the near-duplicate radius.
        searches: the exact embedding search by content hash (`embedding`), to be passed as
            `previous` to the next run's `find_content_neighbors` (the hash signal keeps none).
        updates: per signal, whether its search ran in full or incrementally, and why.
    """

    pixel_hashes: np.ndarray
    identical_group: np.ndarray
    nearest_row: np.ndarray
    nearest_distance: np.ndarray
    pairs: pd.DataFrame
    searches: dict[str, KeyedSearch] = field(default_factory=dict)
    updates: dict[str, SearchUpdate] = field(default_factory=dict)

    def pairs_by_hash(self) -> pd.DataFrame:
        """Close pairs as a new DataFrame [left_hash, right_hash, distance] (cosine distance)."""
        return pd.DataFrame(
            {
                "left_hash": self.pixel_hashes[self.pairs["left"].to_numpy()].astype(str),
                "right_hash": self.pixel_hashes[self.pairs["right"].to_numpy()].astype(str),
                "distance": self.pairs["distance"].to_numpy(np.float64),
            }
        )


@dataclass(frozen=True)
class HashSignal:
    """A perceptual-hash signal that vouches for matches beside the embedding (SPEC.md, "several
    signals").

    It counts for a pair only where its distance is within `threshold_bits` and both hashes are
    informative (`core.images.informative_phashes`: never on flat images); there the bits are
    mapped linearly onto the cosine scale so that `threshold_bits` lands on the near-duplicate
    radius. Beyond that it does not count at all, so a unique image's score is its embedding's.

    Attributes:
        hashes_by_content: pixel hash -> (V,) uint64 hashes, identity variant first.
        threshold_bits: the signal's cutoff, the Hamming distance that counts as exactly at the
            near-duplicate threshold.
    """

    hashes_by_content: dict
    threshold_bits: int = 10

    def matrix(self, pixel_hashes) -> np.ndarray:
        """(M, V) uint64 hashes of the given contents, in that order (stored as signed int64)."""
        return np.stack([np.asarray(self.hashes_by_content[h]).astype(np.int64).view(np.uint64) for h in pixel_hashes])

    def bits_to_cosine(self, near_duplicate_cosine_distance: float) -> float:
        """Linear map of bits onto the cosine scale: `threshold_bits` lands on the threshold."""
        return near_duplicate_cosine_distance / self.threshold_bits

    def vouched_matches(self, phashes: np.ndarray, radius: float, k: int = NEIGHBORS_PER_ROW) -> tuple[NeighborSearch, SearchUpdate]:
        """The pairs this signal vouches for, on the cosine scale, and how they were searched.

        Args:
            phashes: (M, V) uint64, `matrix` of the contents.
            radius: cosine distance `threshold_bits` maps to (2 x the near-duplicate threshold).
            k: matches kept per row.

        Returns:
            (search, update): the pairs of informative rows within `threshold_bits`, each row's up
            to k nearest among them (-1 / inf pads; rows without information have none), all
            distances mapped onto the cosine scale; update says whether the multi-index or the
            exact Hamming search ran (`core.hash_index.search_hash_neighbors_within`: equal answers).
        """
        rows = np.flatnonzero(informative_phashes(phashes))
        plan = plan_substrings(len(rows), phashes.shape[1], self.threshold_bits) if len(rows) > 1 else None
        found = search_hash_neighbors_within(phashes[rows], k, self.threshold_bits, method="exact" if plan is None else "index", plan=plan)
        reason = f"pairs within {self.threshold_bits} bits of {len(rows)} contents with an informative hash"
        update = SearchUpdate("index" if plan is not None else "full", len(rows), reason)
        total = len(phashes)
        index = np.full((total, found.topk_index.shape[1]), -1, dtype=np.int64)
        distance = np.full(index.shape, np.inf, dtype=np.float32)
        index[rows] = np.where(found.topk_index >= 0, rows[np.maximum(found.topk_index, 0)], -1)
        distance[rows] = found.topk_distance
        # `rows` ascends, so mapped pairs keep left < right and their (left, right) order.
        matches = NeighborSearch(index, distance, rows[found.pair_left], rows[found.pair_right], found.pair_distance)
        return scaled(matches, self.bits_to_cosine(radius)), update

    def vouched_distances_from(self, phashes: np.ndarray, informative: np.ndarray, row: int, radius: float) -> np.ndarray:
        """(M,) float32 cosine-scale distances this signal gives from one row to every row: the
        mapped bits where within `threshold_bits` and both rows are informative, else +inf."""
        bits = hamming_distances_from(phashes, row)
        vouched = (bits <= self.threshold_bits) & informative & informative[row]
        return np.where(vouched, bits * np.float32(self.bits_to_cosine(radius)), np.float32(np.inf)).astype(np.float32)


def find_content_neighbors(
    vectors: ContentVectors | Mapping[str, np.ndarray] | pd.Series,
    radius: float,
    hash_signal: HashSignal | None = None,
    previous: dict[str, KeyedSearch] | None = None,
    engine: str = "exact",
    rotated_copy_signal: RotatedCopySignal | None = None,
) -> ContentNeighbors:
    """Search neighbours among distinct contents, independent of discovery order.

    A pair's distance is the smallest over the signals, as SPEC.md asks: the embedding cosine
    distance, and where the hash signal vouches for the pair (within its cutoff, both hashes
    informative) the hash distance mapped so that `threshold_bits` equals `radius`.

    Args:
        vectors: the contents' embeddings, as `ContentVectors` (used in place) or a mapping pixel
            hash -> embedding (any float dtype; sorted and normalised here).
        radius: cosine distance within which pairs are kept (2 x the near-duplicate threshold).
        hash_signal: optional perceptual hashes per pixel hash.
        previous: `ContentNeighbors.searches` of an earlier call on the same model's vectors; the
            exact searches are then brought up to date by searching only new contents and contents
            that lost a neighbour (same result as a full search, see `core.neighbor_cache`).
        engine: the embedding search, `exact`, `index` or `auto` (see SEARCH_ENGINES). The
            index finds nearly every neighbour (recall@1 0.996 at 1M in BENCHMARKS.md) and keeps
            no cache between runs. The hash signal is searched in full on every run, only within
            its cutoff (`HashSignal.vouched_matches`).
        rotated_copy_signal: optional check of contents turned by an arbitrary angle with black
            corners against their nearest contents (`core.rotated_copies`); it runs on every call,
            from the embedding search, so incremental and full runs agree.
    """
    if not isinstance(vectors, ContentVectors):
        vectors = ContentVectors.from_mapping(vectors)
    hashes, matrix = vectors.hashes, vectors.matrix
    if len(hashes) == 0:
        empty = np.empty(0, np.int64)
        return ContentNeighbors(hashes, empty, empty, np.empty(0, np.float32), pd.DataFrame({"left": empty, "right": empty, "distance": np.empty(0, np.float32)}))
    previous = previous or {}
    radius = max(radius, IDENTICAL_COSINE_DISTANCE)
    searches, updates = {}, {}
    embedding_search = _embedding_search(matrix, hashes, radius, engine, previous.get("embedding"), searches, updates)
    identical = embedding_search.pair_distance < IDENTICAL_COSINE_DISTANCE
    group = _union_find_labels(len(hashes), embedding_search.pair_left[identical], embedding_search.pair_right[identical])

    search, row_distances = embedding_search, lambda row: cosine_distances_from(matrix, row)
    if hash_signal is not None and hash_signal.threshold_bits > 0:
        phashes = hash_signal.matrix(hashes)
        informative = informative_phashes(phashes)
        hash_matches, updates["hash"] = hash_signal.vouched_matches(phashes, radius)
        search = merge_searches([embedding_search, hash_matches], k=NEIGHBORS_PER_ROW)

        def row_distances(row):
            return np.minimum(cosine_distances_from(matrix, row), hash_signal.vouched_distances_from(phashes, informative, row, radius))

    if rotated_copy_signal is not None:
        turned_matches, tested = rotated_copy_signal.vouched_matches(hashes, embedding_search, group, radius)
        updates["rotated_copy"] = SearchUpdate("full", tested, f"{len(turned_matches.pair_left)} turned copies proven among {tested} contents just beyond the radius")
        search = merge_searches([search, turned_matches], k=NEIGHBORS_PER_ROW)
        fused_row_distances = row_distances

        def row_distances(row):
            return np.minimum(fused_row_distances(row), turned_vouched_distances_from(turned_matches, row))

    nearest_row, nearest_distance = nearest_outside_group(row_distances, group, search)
    pairs = pd.DataFrame({"left": search.pair_left, "right": search.pair_right, "distance": search.pair_distance})
    return ContentNeighbors(hashes, group, nearest_row, nearest_distance, pairs, searches, updates)


def _embedding_search(matrix, hashes, radius, engine, previous, searches, updates) -> NeighborSearch:
    """The cosine search, exact (incremental from `previous`) or through the index; records its
    `KeyedSearch` (exact only) and `SearchUpdate` under "embedding"."""
    engine, why = choose_search_engine(engine, len(hashes))
    if engine == "index":
        from core.ann import search_neighbors_ivf

        updates["embedding"] = SearchUpdate("index", len(hashes), why)
        return search_neighbors_ivf(matrix, k=NEIGHBORS_PER_ROW, radius=radius)
    searches["embedding"], updates["embedding"] = update_search(
        previous,
        hashes,
        f"cosine k={NEIGHBORS_PER_ROW} radius={radius!r}",
        NEIGHBORS_PER_ROW,
        radius,
        full_search=lambda: search_neighbors(matrix, k=NEIGHBORS_PER_ROW, radius=radius),
        row_distances=lambda rows: cosine_distance(matrix[rows] @ matrix.T),
        # As search_neighbors reports pairs: each pair's own dot product.
        pair_distances=lambda left, right: cosine_distance(np.einsum("ij,ij->i", matrix[left], matrix[right])),
    )
    return searches["embedding"].search


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
    missing = set(images["pixel_hash"]) - set(row_of_hash)
    if missing:
        raise ValueError(f"{len(missing)} pixel hashes have no embedding (e.g. {sorted(missing)[:3]}); embed them before scoring")
    scores = images[["image_id", "path", "pixel_hash"]].copy()
    content_row = scores["pixel_hash"].map(row_of_hash).to_numpy(np.int64)
    group_row = neighbors.identical_group[content_row]
    scores["identical_group"] = neighbors.pixel_hashes[group_row]
    scores["_rank"] = scores["image_id"].map(keep_rank).to_numpy()
    if scores["_rank"].isna().any():
        raise ValueError("keep_rank is missing some image ids; rank every image with keep_policy_order")
    scores["identical_group_size"] = scores.groupby("identical_group")["image_id"].transform("size")
    is_keeper = scores["_rank"] == scores.groupby("identical_group")["_rank"].transform("min")

    nearest_distance = neighbors.nearest_distance[content_row].astype(np.float64)
    has_other = np.isfinite(nearest_distance)
    uniqueness = np.where(has_other, np.maximum(to_uniqueness(nearest_distance), MIN_NONZERO_UNIQUENESS), 1.0)
    scores["uniqueness"] = np.where(is_keeper, uniqueness, 0.0)
    scores["label"] = [label_for(u, thresholds) for u in scores["uniqueness"]]

    # The nearest image outside the group: its keeper, so that the name is stable across runs.
    keeper_path_by_group = scores[is_keeper].set_index("identical_group")["path"]
    nearest_rows = neighbors.nearest_row[content_row]
    nearest_groups = np.where(nearest_rows >= 0, neighbors.pixel_hashes[neighbors.identical_group[np.maximum(nearest_rows, 0)]], None)
    scores["nearest_path"] = [keeper_path_by_group.get(g) if has else None for g, has in zip(nearest_groups, has_other)]
    return scores.drop(columns="_rank").sort_values("path", ignore_index=True)

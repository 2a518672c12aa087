"""Neighbours among distinct contents, every signal fused: the one search the scoring stage and
the clean-set check both run (SPEC.md, "several signals").

A pair's distance is the smallest over the signals: the embedding cosine distance; where the
perceptual hash vouches for the pair (within its cutoff, both hashes informative), the hash
distance mapped so that its cutoff equals the near-duplicate radius (`core.search.signals`); and
where the turned-copy check proves a copy (`core.rotated_copies`), its distance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imgdedup_pipeline.core.images import informative_phashes
from imgdedup_pipeline.core.rotated_copies import RotatedCopySignal
from imgdedup_pipeline.core.rotated_copies import vouched_distances_from as turned_vouched_distances_from
from imgdedup_pipeline.core.search.cache import SearchCache, SearchUpdate
from imgdedup_pipeline.core.search.choose import choose_engine
from imgdedup_pipeline.core.search.result import (
    NeighborSearch,
    RowBlockLists,
    l2_normalize,
    merge_searches,
    nearest_outside_group,
)
from imgdedup_pipeline.core.search.signals import NEIGHBORS_PER_ROW, HashSignal

IDENTICAL_COSINE_DISTANCE = 1e-5  # below this, two vectors are float noise of the same content


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
    def from_mapping(cls, vectors_by_hash: Mapping[str, np.ndarray] | pd.Series) -> ContentVectors:
        """Sort by hash, stack and L2-normalise (any float dtype)."""
        hashes = np.array(sorted(vectors_by_hash.keys()), dtype=object)
        if len(hashes) == 0:
            return cls(hashes, np.empty((0, 0), np.float32))
        return cls(hashes, l2_normalize(np.stack([np.asarray(vectors_by_hash[h], dtype=np.float32) for h in hashes])))


@dataclass(frozen=True)
class ContentNeighbors:
    """Neighbour structure over distinct contents (one row per pixel hash, sorted by hash).

    Attributes:
        pixel_hashes: (M,) sorted distinct pixel hashes.
        identical_group: (M,) int64, the smallest row index of the row's identical group (each
            row its own group when identical contents were not grouped).
        nearest_row / nearest_distance: nearest row outside the identical group (-1 / inf if none).
        pairs: DataFrame [left, right, distance] of rows within the near-duplicate radius.
        updates: per signal, whether its search ran in full, incrementally or through an index, and why.
    """

    pixel_hashes: np.ndarray
    identical_group: np.ndarray
    nearest_row: np.ndarray
    nearest_distance: np.ndarray
    pairs: pd.DataFrame
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


def find_content_neighbors(
    vectors: ContentVectors | Mapping[str, np.ndarray] | pd.Series | Callable[[], ContentVectors],
    radius: float,
    hash_signal: HashSignal | None = None,
    cache: SearchCache | None = None,
    engine: str = "exact",
    rotated_copy_signal: RotatedCopySignal | None = None,
    *,
    group_identical: bool = True,
) -> ContentNeighbors:
    """Search neighbours among distinct contents, independent of discovery order, every signal fused.

    Args:
        vectors: the contents' embeddings, as `ContentVectors` (used in place) or a mapping pixel
            hash -> embedding (any float dtype; sorted and normalised here), or a function that
            reads them as `ContentVectors`: it is called once the hash signal's search is done, so
            that its tables and the (M, D) matrix are never held at once (the stage's peak at 1M
            contents, BENCHMARKS.md "Memory at 1M"); with a hash signal it must read exactly the
            signal's contents.
        radius: cosine distance within which pairs are kept (2 x the near-duplicate threshold);
            the hash signal's cutoff maps onto it.
        hash_signal: optional perceptual hashes per pixel hash.
        cache: where the exact embedding search is kept between runs; it is then brought up to
            date by searching only new contents and contents that lost a neighbour (same result
            as a full search, `core.search.cache`). The indexed search keeps none.
        engine: the embedding search setting, `exact`, `index` or `auto`
            (`core.search.choose.choose_engine`). The index finds nearly every neighbour (recall@1
            0.996 at 1M in BENCHMARKS.md). The hash signal is searched in full on every run, only
            within its cutoff (`HashSignal.vouched_pairs`).
        rotated_copy_signal: optional check of contents turned by an arbitrary angle with black
            corners against their nearest contents (`core.rotated_copies`); it runs on every call,
            from the embedding search, so incremental and full runs agree.
        group_identical: contents closer than IDENTICAL_COSINE_DISTANCE form one identical group
            (the scoring's rule); False keeps every content its own group (the clean-set check,
            where any other content counts).
    """
    if hash_signal is not None and hash_signal.threshold_bits <= 0:
        hash_signal = None
    # Given a reader and a hash signal, the vectors are read after the hash search (its contents
    # are the signal's); otherwise they are at hand from the start.
    read = vectors if callable(vectors) and hash_signal is not None else None
    content_vectors = None if read is not None else _content_vectors(vectors() if callable(vectors) else vectors)
    radius = max(radius, IDENTICAL_COSINE_DISTANCE)
    updates = {}
    if hash_signal is not None:
        hashes = hash_signal.pixel_hashes if content_vectors is None else content_vectors.hashes
        phashes, edges = hash_signal.matrix(hashes), hash_signal.edges(hashes)
        informative = informative_phashes(phashes)
        hash_pairs, updates["hash"] = hash_signal.vouched_pairs(phashes, edges)
    if read is not None:
        content_vectors = _content_vectors(read())
        if not np.array_equal(content_vectors.hashes, hashes):
            raise ValueError("the vectors read are not of the hash signal's contents")
    assert content_vectors is not None  # at hand from the start, or read just now
    hashes, matrix = content_vectors.hashes, content_vectors.matrix
    if len(hashes) == 0:
        empty = np.empty(0, np.int64)
        return ContentNeighbors(
            hashes,
            empty,
            empty,
            np.empty(0, np.float32),
            pd.DataFrame({"left": empty, "right": empty, "distance": np.empty(0, np.float32)}),
        )
    choice = choose_engine("cosine", len(hashes), engine)
    embedding = choice.engine.build(matrix)
    if choice.mode == "exact" and cache is not None:
        embedding_search, updates["embedding"] = cache.search(embedding, hashes, NEIGHBORS_PER_ROW, radius)
    else:
        embedding_search = embedding.search(NEIGHBORS_PER_ROW, radius)
        mode = "full" if choice.mode == "exact" else choice.mode
        updates["embedding"] = SearchUpdate(
            mode, len(hashes), choice.reason if mode == "index" else "no previous search"
        )
    identical = embedding_search.pair_distance < IDENTICAL_COSINE_DISTANCE
    if group_identical:
        group = identical_groups(
            len(hashes), embedding_search.pair_left[identical], embedding_search.pair_right[identical]
        )
    else:
        group = np.arange(len(hashes), dtype=np.int64)

    searches: list[NeighborSearch | RowBlockLists] = [embedding_search]
    distance_rules = [lambda row: embedding.distances_from(np.array([row]))[0]]
    if hash_signal is not None:
        searches.append(hash_pairs.lists(NEIGHBORS_PER_ROW, hash_signal.bits_to_cosine(radius)))
        distance_rules.append(lambda row: hash_signal.vouched_distances_from(phashes, edges, informative, row, radius))
    if rotated_copy_signal is not None:
        turned_matches, tested = rotated_copy_signal.vouched_matches(hashes, embedding_search, group, radius)
        updates["rotated_copy"] = SearchUpdate(
            "full",
            tested,
            f"{len(turned_matches.pair_left)} turned copies proven among {tested} turned contents with neighbours just beyond the radius",
        )
        searches.append(turned_matches)
        distance_rules.append(lambda row: turned_vouched_distances_from(turned_matches, row))
    # The embedding search is this call's own: the fused lists are written into its lists.
    search = merge_searches(searches, k=NEIGHBORS_PER_ROW, into_first=True) if len(searches) > 1 else embedding_search
    # Each signal's own top-k lists (~190 MiB apiece at 1M contents) are in `search` now.
    del searches, embedding_search

    def row_distances(row: int) -> np.ndarray:
        """(M,) fused distances from one row: the smallest any signal gives."""
        return np.minimum.reduce([rule(row) for rule in distance_rules])

    nearest_row, nearest_distance = nearest_outside_group(row_distances, group, search)
    pairs = pd.DataFrame({"left": search.pair_left, "right": search.pair_right, "distance": search.pair_distance})
    return ContentNeighbors(hashes, group, nearest_row, nearest_distance, pairs, updates)


def _content_vectors(vectors: ContentVectors | Mapping[str, np.ndarray] | pd.Series) -> ContentVectors:
    return vectors if isinstance(vectors, ContentVectors) else ContentVectors.from_mapping(vectors)


def identical_groups(size: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(size,) int64: for each row, the smallest row of its connected component under the given pairs."""
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(size, size))
    count, labels = connected_components(graph, directed=False)
    smallest = np.full(count, size, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(size, dtype=np.int64))
    return smallest[labels]

"""Exact nearest-neighbour search over L2-normalised vectors, streamed in row chunks.

Never holds an N x N matrix: each chunk of rows is multiplied against all vectors and reduced to
its top-k neighbours and its close pairs before the next chunk starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class NeighborSearch:
    """Result of `search_neighbors` over M vectors.

    Attributes:
        topk_index: (M, k) int64, nearest other rows by cosine distance, ascending; -1 pads.
        topk_distance: (M, k) float32 cosine distances `1 - cos`, +inf where padded.
        pair_left, pair_right: (P,) int64 row pairs with left < right whose distance <= radius.
        pair_distance: (P,) float32 their cosine distances.
    """

    topk_index: np.ndarray
    topk_distance: np.ndarray
    pair_left: np.ndarray
    pair_right: np.ndarray
    pair_distance: np.ndarray


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def search_neighbors(vectors: np.ndarray, k: int, radius: float, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> NeighborSearch:
    """Find each row's k nearest other rows and every pair within `radius` (cosine distance).

    Args:
        vectors: (M, D) L2-normalised float32 rows.
        k: neighbours kept per row (clipped to M - 1).
        radius: pairs with `1 - cos <= radius` are returned (cosine distance, in [0, 2]).
        chunk_rows: rows multiplied at once; memory is O(chunk_rows * M).

    Returns:
        NeighborSearch with distances clipped to [0, 2].
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = vectors.shape[0]
    k = max(0, min(k, rows - 1))
    topk_index = np.full((rows, k), -1, dtype=np.int64)
    topk_distance = np.full((rows, k), np.inf, dtype=np.float32)
    lefts, rights, dists = [], [], []
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        distance = 1.0 - vectors[start:stop] @ vectors.T
        np.clip(distance, 0.0, 2.0, out=distance)
        local = np.arange(stop - start)
        distance[local, local + start] = np.inf  # a row is not its own neighbour
        if k:
            part = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < rows else np.argsort(distance, axis=1)[:, :k]
            part_distance = np.take_along_axis(distance, part, axis=1)
            order = np.lexsort((part, part_distance), axis=1)  # ascending distance, ties by index
            topk_index[start:stop] = np.take_along_axis(part, order, axis=1)
            topk_distance[start:stop] = np.take_along_axis(part_distance, order, axis=1)
        close_row, close_col = np.nonzero(distance <= radius)
        close_row += start
        keep = close_row < close_col
        lefts.append(close_row[keep])
        rights.append(close_col[keep])
        dists.append(distance[close_row[keep] - start, close_col[keep]])
    empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float32)
    return NeighborSearch(
        topk_index=topk_index,
        topk_distance=topk_distance,
        pair_left=np.concatenate(lefts).astype(np.int64) if lefts else empty_i,
        pair_right=np.concatenate(rights).astype(np.int64) if rights else empty_i,
        pair_distance=np.concatenate(dists).astype(np.float32) if dists else empty_f,
    )


def nearest_outside_group(vectors: np.ndarray, group_of_row: np.ndarray, search: NeighborSearch) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the nearest row in a different group, and its cosine distance.

    Uses the top-k lists; rows whose k neighbours all share their group (groups larger than k) are
    recomputed exactly against all rows.

    Returns:
        (index, distance): (M,) int64 with -1 where no row outside the group exists, and (M,)
        float32 with +inf there.
    """
    rows = vectors.shape[0]
    index = np.full(rows, -1, dtype=np.int64)
    distance = np.full(rows, np.inf, dtype=np.float32)
    if rows == 0:
        return index, distance
    topk = search.topk_index
    valid = topk >= 0
    other_group = valid & (group_of_row[np.where(valid, topk, 0)] != group_of_row[:, None])
    has_other = other_group.any(axis=1)
    first = np.argmax(other_group, axis=1)
    found = np.nonzero(has_other)[0]
    index[found] = topk[found, first[found]]
    distance[found] = search.topk_distance[found, first[found]]
    group_sizes = np.bincount(group_of_row)
    needs_exact = np.nonzero(~has_other & (group_sizes[group_of_row] < rows))[0]
    for row in needs_exact:
        row_distance = np.clip(1.0 - vectors @ vectors[row], 0.0, 2.0)
        row_distance[group_of_row == group_of_row[row]] = np.inf
        best = int(np.argmin(row_distance))
        index[row], distance[row] = best, row_distance[best]
    return index, distance

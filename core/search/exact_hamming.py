"""Exact rotation/flip-invariant Hamming search over perceptual hashes, streamed in row chunks.

Rows of an (M, V) uint64 array hold V dihedral variants of one image's hash, identity first;
the distance between two rows is `core.distances.invariant_hamming` (the smallest Hamming distance
between one's identity and any variant of the other, both ways). O(M^2): the multi-index search
(`core.search.mih`) finds the pairs within a radius exactly in less time from a few thousand rows.
"""

from __future__ import annotations

import numpy as np

from imgdedup_pipeline.core.distances import invariant_hamming_matrix, nearest_first
from imgdedup_pipeline.core.search.result import NeighborSearch

HASH_BITS = 64


def _search(rows: int, k: int, radius: float, chunk_rows: int, distance_block) -> NeighborSearch:
    """Top-k + radius reduction over row chunks of a distance matrix.

    `distance_block(start, stop)` returns the (stop - start, rows) float32 distances of those rows.
    """
    k = max(0, min(k, rows - 1))
    topk_index = np.full((rows, k), -1, dtype=np.int64)
    topk_distance = np.full((rows, k), np.inf, dtype=np.float32)
    lefts, rights, dists = [], [], []
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        distance = distance_block(start, stop)
        local = np.arange(stop - start)
        distance[local, local + start] = np.inf  # a row is not its own neighbour
        if k:
            part = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < rows else np.argsort(distance, axis=1)[:, :k]
            topk_index[start:stop], topk_distance[start:stop] = nearest_first(
                part, np.take_along_axis(distance, part, axis=1)
            )
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


def as_hash_matrix(hashes: np.ndarray) -> np.ndarray:
    """(M, V) C-contiguous uint64 hashes from uint64 or int64 bit patterns; anything else is refused."""
    hashes = np.asarray(hashes)
    hashes = np.ascontiguousarray(hashes.view(np.uint64) if hashes.dtype == np.int64 else hashes, dtype=np.uint64)
    if hashes.ndim != 2:
        raise ValueError(f"hashes must be (M, V), got shape {hashes.shape}")
    return hashes


def search_hash_pairs(hashes: np.ndarray, k: int, radius_bits: float) -> NeighborSearch:
    """Every pair within `radius_bits` and each row's up-to-k nearest rows among those pairs.

    Args:
        hashes: (M, V) uint64 (or int64 bit patterns), identity variant in column 0.
        k: neighbours kept per row (clipped to M - 1).
        radius_bits: pairs with distance <= radius_bits are returned.

    Returns:
        NeighborSearch: pairs (left < right) sorted by (left, right) with float32 bit distances,
        those of `search_hash_neighbors(hashes, k, radius_bits)`; top-k: for each row the k
        nearest rows within the radius, ascending by distance, ties by smaller index, padded with
        -1 / +inf (shape (M, min(k, M - 1))). Where search_hash_neighbors' top-k entries lie
        within the radius, their distances are these; its rows can differ only among rows tied at
        its k-th distance (np.argpartition picks any of them, not the smallest index).
    """
    hashes = as_hash_matrix(hashes)
    rows, variants = hashes.shape
    if rows < 2 or radius_bits < 0 or variants == 0:
        left = right = np.empty(0, np.int64)
        distance = np.empty(0, np.float32)
    else:
        exact = search_hash_neighbors(hashes, 0, radius_bits)
        left, right, distance = exact.pair_left, exact.pair_right, exact.pair_distance
    index, dist = topk_from_pairs(rows, max(0, min(k, rows - 1)), left, right, distance)
    return NeighborSearch(index, dist, left, right, distance)


def hamming_distances_from(hashes: np.ndarray, row: int) -> np.ndarray:
    """(M,) rotation/flip-invariant Hamming distances (bits) from one row to every row.

    `hashes` is (M, V) uint64 with the identity variant in column 0; the distance between i and j
    is the smallest Hamming distance between one's identity hash and any variant of the other,
    taken both ways so that it is symmetric.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    return invariant_hamming_matrix(hashes[row : row + 1], np.ascontiguousarray(hashes.T))[0]


def hamming_distances_of_rows(hashes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), M) float32 bits from the given rows to every row (as `hamming_distances_from`)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    return invariant_hamming_matrix(hashes[np.asarray(rows, dtype=np.int64)], np.ascontiguousarray(hashes.T))


def search_hash_neighbors(hashes: np.ndarray, k: int, radius_bits: float, max_cells: int = 1 << 24) -> NeighborSearch:
    """Like `search_neighbors`, with `hamming_distances_from`'s distance in bits.

    Args:
        hashes: (M, V) uint64, identity variant first.
        k: neighbours kept per row.
        radius_bits: pairs within this many bits are returned.
        max_cells: bound on the (rows x M) block held at once (~14 bytes a cell).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    rows = hashes.shape[0]
    chunk_rows = max(1, max_cells // max(1, rows))
    by_variant = np.ascontiguousarray(hashes.T)
    return _search(
        rows, k, radius_bits, chunk_rows, lambda start, stop: invariant_hamming_matrix(hashes[start:stop], by_variant)
    )


def topk_from_pairs(rows: int, k: int, left: np.ndarray, right: np.ndarray, distance: np.ndarray):
    """(M, k) nearest rows among each row's pairs: ascending distance, ties by smaller index
    (`PairLists`, all rows at once)."""
    return PairLists(rows, left, right, distance).topk(k)


class PairLists:
    """Every row's pairs, nearest first (ascending bits, ties by smaller index), read for any
    block of rows: a caller that merges lists block by block never holds (M, k) arrays of them.

    Each pair is listed under both rows as one int64, (row * 65 + bits) * M + neighbour, sorted
    in place (16 bytes a pair); the j-th nearest of a row is then at its row's start + j.

    Args:
        rows: M.
        left, right: (P,) int64 row pairs.
        distance: (P,) their distances in whole bits (0-64).
    """

    def __init__(self, rows: int, left: np.ndarray, right: np.ndarray, distance: np.ndarray):
        self.rows = rows
        pairs = len(left)
        self.key = np.empty(2 * pairs, np.int64)
        for half, (row, other) in enumerate(((left, right), (right, left))):
            part = self.key[half * pairs : (half + 1) * pairs]
            np.multiply(row, HASH_BITS + 1, out=part)
            part += np.asarray(distance).astype(np.int64)
            part *= rows
            part += other
        self.key.sort()
        self.degree = np.bincount(left, minlength=rows) + np.bincount(right, minlength=rows)
        self.start = np.cumsum(self.degree) - self.degree

    def topk(self, k: int, first: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows first..stop, k) int64 nearest rows (-1 pads) and float32 bits (+inf pads)."""
        stop = self.rows if stop is None else stop
        index = np.full((stop - first, k), -1, dtype=np.int64)
        dist = np.full((stop - first, k), np.inf, dtype=np.float32)
        degree, start = self.degree[first:stop], self.start[first:stop]
        for rank in range(k if len(self.key) else 0):
            has = np.flatnonzero(degree > rank)
            bits, other = np.divmod(self.key[start[has] + rank] % ((HASH_BITS + 1) * self.rows), self.rows)
            index[has, rank] = other
            dist[has, rank] = bits.astype(np.float32)
        return index, dist

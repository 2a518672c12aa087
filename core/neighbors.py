"""Exact nearest-neighbour search, streamed in row chunks: cosine distance over L2-normalised
vectors, and rotation/flip-invariant Hamming distance over perceptual hashes.

Never holds an N x N matrix: each chunk of rows is compared against all rows and reduced to its
top-k neighbours and its close pairs before the next chunk starts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_CHUNK_ROWS = 2048
MAX_BLOCK_CELLS = 1 << 26
# bf16 candidate search (see `_search_neighbors_bf16`): extra candidates kept per row beyond k,
# columns per group of the group-max prefilter, and the size below which fp32 is used anyway.
BF16_MARGIN = 16
BF16_GROUP = 16
BF16_MIN_ROWS = 8192
BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest is within 2^-8
FP32_UNIT_ROUNDOFF = 2.0**-24
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class NeighborSearch:
    """Result of a neighbour search over M rows (cosine distance, bits, or a fused scale).

    Attributes:
        topk_index: (M, k) int64, nearest other rows, ascending by distance; -1 pads.
        topk_distance: (M, k) float32 distances, +inf where padded.
        pair_left, pair_right: (P,) int64 row pairs with left < right whose distance <= radius.
        pair_distance: (P,) float32 their distances.
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
        chunk_rows: rows multiplied at once; memory is O(min(chunk_rows, MAX_BLOCK_CELLS / M) * M).

    Returns:
        NeighborSearch with distances clipped to [0, 2]; pairs sorted by (left, right).
    """
    import torch

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = vectors.shape[0]
    k = max(0, min(k, rows - 1))
    # Bound the similarity block (~256 MiB of float32) so that memory stays flat as M grows.
    chunk_rows = max(1, min(chunk_rows, MAX_BLOCK_CELLS // max(1, rows)))
    every = torch.from_numpy(vectors)
    # Pairs are looked for among similarities above this floor, then re-checked exactly as
    # `1 - s <= radius` in float32, so rounding of the threshold itself cannot drop a pair.
    min_similarity = 1.0 - radius - 1e-5
    topk_index = np.full((rows, k), -1, dtype=np.int64)
    topk_distance = np.full((rows, k), np.inf, dtype=np.float32)
    lefts, rights = [], []
    with torch.inference_mode():
        for start in range(0, rows, chunk_rows):
            stop = min(start + chunk_rows, rows)
            local = torch.arange(stop - start)
            similarity = every[start:stop] @ every.T
            similarity[local, local + start] = -torch.inf  # a row is not its own neighbour
            if k:
                values, index = torch.topk(similarity, k, dim=1, largest=True, sorted=True)
                distance = np.clip(1.0 - values.numpy(), 0.0, 2.0)
                index = index.numpy()
                order = np.lexsort((index, distance), axis=1)  # ascending distance, ties by index
                topk_index[start:stop] = np.take_along_axis(index, order, axis=1)
                topk_distance[start:stop] = np.take_along_axis(distance, order, axis=1)
                # A row whose k-th neighbour is already outside the radius has all its close pairs
                # in its top-k; only rows in dense clusters need a scan of the whole block row.
                in_topk = values[:, -1] < min_similarity
            else:
                in_topk = torch.zeros(stop - start, dtype=torch.bool)
            if k:
                close = values >= min_similarity
                close[~in_topk] = False
                row, position = torch.nonzero(close, as_tuple=True)
                lefts.append(row.numpy() + start)
                rights.append(index[row.numpy(), position.numpy()] if len(row) else np.empty(0, np.int64))
            dense = torch.nonzero(~in_topk).ravel()
            if len(dense):
                row, column = torch.nonzero(similarity[dense] >= min_similarity, as_tuple=True)
                lefts.append(dense[row].numpy() + start)
                rights.append(column.numpy())
    left = np.concatenate(lefts).astype(np.int64) if lefts else np.empty(0, np.int64)
    right = np.concatenate(rights).astype(np.int64) if rights else np.empty(0, np.int64)
    keep = left < right
    left, right = left[keep], right[keep]
    distance = np.clip(1.0 - np.einsum("ij,ij->i", vectors[left], vectors[right]), 0.0, 2.0).astype(np.float32)
    within = distance <= radius
    left, right, distance = left[within], right[within], distance[within]
    order = np.lexsort((right, left))
    return NeighborSearch(topk_index, topk_distance, left[order], right[order], distance[order])


def _search(rows: int, k: int, radius: float, chunk_rows: int, distance_block) -> NeighborSearch:
    """Shared top-k + radius reduction over row chunks of a distance matrix.

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


def merge_searches(searches: list[NeighborSearch], k: int) -> NeighborSearch:
    """Fuse searches whose distances are already on one scale: a pair's distance is the smallest
    any search gives it; top-k lists are merged and cut to k."""
    index = np.concatenate([s.topk_index for s in searches], axis=1)
    distance = np.concatenate([s.topk_distance for s in searches], axis=1)
    order = np.lexsort((index, distance), axis=1)[:, : max(0, min(k, index.shape[1]))]
    pairs = pd.DataFrame(
        {
            "left": np.concatenate([s.pair_left for s in searches]),
            "right": np.concatenate([s.pair_right for s in searches]),
            "distance": np.concatenate([s.pair_distance for s in searches]),
        }
    ).groupby(["left", "right"], as_index=False, sort=True)["distance"].min()
    return NeighborSearch(
        topk_index=np.take_along_axis(index, order, axis=1),
        topk_distance=np.take_along_axis(distance, order, axis=1),
        pair_left=pairs["left"].to_numpy(np.int64),
        pair_right=pairs["right"].to_numpy(np.int64),
        pair_distance=pairs["distance"].to_numpy(np.float32),
    )


def scaled(search: NeighborSearch, factor: float) -> NeighborSearch:
    """The same search with every distance multiplied by `factor` (maps a signal onto a scale)."""
    return NeighborSearch(search.topk_index, search.topk_distance * np.float32(factor), search.pair_left, search.pair_right, search.pair_distance * np.float32(factor))


def cosine_distances_from(vectors: np.ndarray, row: int) -> np.ndarray:
    """(M,) cosine distances from one row to every row, clipped to [0, 2]."""
    return np.clip(1.0 - vectors @ vectors[row], 0.0, 2.0)


def hamming_distances_from(hashes: np.ndarray, row: int) -> np.ndarray:
    """(M,) rotation/flip-invariant Hamming distances (bits) from one row to every row.

    `hashes` is (M, V) uint64 with the identity variant in column 0; the distance between i and j
    is the smallest Hamming distance between one's identity hash and any variant of the other,
    taken both ways so that it is symmetric.
    """
    return _hamming_block(np.ascontiguousarray(hashes, dtype=np.uint64), row, row + 1)[0]


def hamming_distances_of_rows(hashes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), M) float32 bits from the given rows to every row (as `hamming_distances_from`)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    return _hamming_block(hashes[np.asarray(rows, dtype=np.int64)], 0, len(rows), np.ascontiguousarray(hashes.T))


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
    return _search(rows, k, radius_bits, chunk_rows, lambda start, stop: _hamming_block(hashes, start, stop, by_variant))


def _hamming_block(hashes: np.ndarray, start: int, stop: int, by_variant: np.ndarray | None = None) -> np.ndarray:
    """(stop - start, M) float32 bits: min over variants, both ways, of the Hamming distance.

    One 2-D pass per variant into preallocated buffers: ~10x faster than reducing a
    (rows, M, V) array over its short last axis.
    """
    by_variant = np.ascontiguousarray(hashes.T) if by_variant is None else by_variant
    block, identity = hashes[start:stop], by_variant[0]
    bits = np.bitwise_count(block[:, :1] ^ identity)
    xor = np.empty(bits.shape, np.uint64)
    count = np.empty(bits.shape, np.uint8)
    for variant in range(1, hashes.shape[1]):
        for mine, theirs in ((block[:, :1], by_variant[variant]), (block[:, variant : variant + 1], identity)):
            np.bitwise_xor(mine, theirs, out=xor)
            np.minimum(bits, np.bitwise_count(xor, out=count), out=bits)
    return bits.astype(np.float32)


def nearest_outside_group(row_distances, group_of_row: np.ndarray, search: NeighborSearch) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the nearest row in a different group, and its distance.

    Uses the top-k lists; rows whose k neighbours all share their group (groups larger than k) are
    recomputed exactly with `row_distances(row) -> (M,) distances`.

    Returns:
        (index, distance): (M,) int64 with -1 where no row outside the group exists, and (M,)
        float32 with +inf there.
    """
    rows = len(group_of_row)
    index = np.full(rows, -1, dtype=np.int64)
    distance = np.full(rows, np.inf, dtype=np.float32)
    if rows == 0:
        return index, distance
    topk = search.topk_index
    if topk.shape[1] == 0:  # a single row: nothing outside its group
        return index, distance
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
        row_distance = np.array(row_distances(row), dtype=np.float32)
        row_distance[group_of_row == group_of_row[row]] = np.inf
        best = int(np.argmin(row_distance))
        index[row], distance[row] = best, row_distance[best]
    return index, distance

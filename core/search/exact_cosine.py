"""Exact cosine search in float32, streamed in row chunks: never an N x N matrix. Each chunk of
rows is compared against all rows and reduced to its top-k and its close pairs before the next
chunk starts (as faiss' contrib/exhaustive_search.py does over batches). The reference answer of
every cosine engine; the bf16 candidate filter (`core.search.bf16`) returns exactly this."""

from __future__ import annotations

import numpy as np

from imgdedup_pipeline.core.distances import cosine_distance, nearest_first
from imgdedup_pipeline.core.search.result import NeighborSearch

DEFAULT_CHUNK_ROWS = 2048
MAX_BLOCK_CELLS = 1 << 26


def search_neighbors_fp32(
    vectors: np.ndarray, k: int, radius: float, chunk_rows: int = DEFAULT_CHUNK_ROWS, block_cells: int = MAX_BLOCK_CELLS
) -> NeighborSearch:
    """Each row's k nearest other rows and every pair within `radius` (cosine distance), float32.

    Args:
        vectors: (M, D) L2-normalised float32 rows, C-contiguous.
        k: neighbours kept per row (clipped to M - 1).
        radius: pairs with `1 - cos <= radius` are returned (cosine distance, in [0, 2]).
        chunk_rows: rows multiplied at once (at most what fits `block_cells`).
        block_cells: the similarity block held at once, in float32 cells (256 MiB by default),
            so that memory stays flat as M grows.

    Returns:
        NeighborSearch with distances clipped to [0, 2]; top-k ascending by distance, ties by
        index; pairs sorted by (left, right).
    """
    import torch

    rows = vectors.shape[0]
    k = max(0, min(k, rows - 1))
    # Bound the similarity block (~256 MiB of float32) so that memory stays flat as M grows.
    chunk_rows = max(1, min(chunk_rows, block_cells // max(1, rows)))
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
                topk_index[start:stop], topk_distance[start:stop] = nearest_first(
                    index.numpy(), cosine_distance(values.numpy())
                )
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
    return finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius)


def finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius) -> NeighborSearch:
    """Keep candidate pairs with left < right whose float32 distance is within `radius`."""
    left = np.concatenate(lefts).astype(np.int64) if lefts else np.empty(0, np.int64)
    right = np.concatenate(rights).astype(np.int64) if rights else np.empty(0, np.int64)
    keep = left < right
    left, right = left[keep], right[keep]
    distance = cosine_pair_distances(vectors, left, right)
    within = distance <= radius
    left, right, distance = left[within], right[within], distance[within]
    order = np.lexsort((right, left))
    return NeighborSearch(topk_index, topk_distance, left[order], right[order], distance[order])


def search_rows_fp32(vectors: np.ndarray, rows_wanted: np.ndarray, k: int, block_cells: int):
    """Top-k of the given rows as the float32 search computes it."""
    import torch

    rows = vectors.shape[0]
    every = torch.from_numpy(vectors)
    chunk = max(1, block_cells // max(1, rows))
    index_out = np.empty((len(rows_wanted), k), dtype=np.int64)
    distance_out = np.empty((len(rows_wanted), k), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows_wanted), chunk):
            wanted = torch.from_numpy(rows_wanted[start : start + chunk])
            similarity = every[wanted] @ every.T
            similarity[torch.arange(len(wanted)), wanted] = -torch.inf
            values, index = torch.topk(similarity, k, dim=1, largest=True, sorted=True)
            found = slice(start, start + len(wanted))
            index_out[found], distance_out[found] = nearest_first(index.numpy(), cosine_distance(values.numpy()))
    return index_out, distance_out


def cosine_distances_from(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(len(rows), M) float32 cosine distances from the given rows to every row, clipped to [0, 2].

    One row is one matrix-vector product, as the nearest-outside-group fallback has always
    computed it (a matrix product may round its sums differently).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 1:
        return cosine_distance(vectors @ vectors[rows[0]])[None, :].astype(np.float32, copy=False)
    return cosine_distance(vectors[rows] @ vectors.T).astype(np.float32, copy=False)


# Pairs whose rows are gathered at once. Gathering every pair's rows in one go allocates two
# (P, D) buffers whose fresh pages fault in on every call, many times slower than blocks that reuse
# the same memory (bench/pair_distances.py); each pair's dot product is its own, so equal answers.
PAIR_BLOCK = 1_024


def cosine_pair_distances(vectors: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(P,) float32 cosine distances of row pairs: each pair's own dot product, as searches report pairs."""
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    distance = np.empty(len(left), dtype=np.float32)
    for start in range(0, len(left), PAIR_BLOCK):
        block = slice(start, start + PAIR_BLOCK)
        distance[block] = cosine_distance(np.einsum("ij,ij->i", vectors[left[block]], vectors[right[block]]))
    return distance

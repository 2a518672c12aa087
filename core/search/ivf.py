"""Approximate all-rows nearest-neighbour search for large tables: an IVF index, exact re-rank and
neighbour-graph refinement.

The exact search (`core.search.exact_cosine`) is O(N^2). This module gives the same
`NeighborSearch` (per-row top-k ascending, close pairs within a cosine radius) in time growing at
most as N^1.5 (timings: BENCHMARKS.md, "Scoring 1M vectors with an index"), with every
distance it returns computed exactly in float32 from the original vectors. Steps:

1. read the rows (an (N, D) array, or (keys, vectors) record batches streamed from LanceDB,
   `core.search.batches`) into one L2-normalised float32 (N, D) array: the only full copy held;
2. spherical k-means on a sample gives `nlist` centroids; every row's `nprobe` nearest centroids
   are found once (one blocked GEMM pass) and serve both to file the row in its list and as the
   lists its query scans;
3. an IVF index with 4-bit product-quantised codes (faiss `IndexIVFPQFastScan`, D/8 bytes per
   row: 96 B at D = 768, ~100 MiB at 1M rows) holds every row; all rows are searched against it in
   blocks, grouped by list so that consecutive queries share their lists and candidates in cache;
4. each row's `rerank` candidates are re-ranked exactly (float32 inner products with the original
   vectors); the top-k are kept, and candidates within the radius become close pairs;
5. `refine_rounds` rounds of neighbour-graph refinement: each row also considers the rows that
   list it among their top-k (reverse edges, with distances already exact) and its neighbours'
   neighbours (exactly re-ranked). A row whose true neighbour sits in a list it did not probe
   usually has a cluster-mate that did: on the synthetic clusters of bench/scoring.py at 1M rows,
   recall@1 is ~0.81 after step 4, 0.96 after one round and 0.996 after two (the defaults);
6. rows whose every candidate is within the radius (more close rows than candidates) are scanned
   exactly against all rows, so that their close pairs are complete.

Approximation: a true neighbour is missed only when neither the index search nor the refinement
proposes it; everything returned is exact. Figures: BENCHMARKS.md, "Scoring 1M vectors with an
index". faiss-cpu is an optional dependency: `pip install 'imgdedup-pipeline[scale]'`.

Over 400 lines: one index (train, add, probe, re-rank, refine) whose steps share memory bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from imgdedup_pipeline.core.distances import cosine_distance
from imgdedup_pipeline.core.search.batches import read_batches, release_free_heap
from imgdedup_pipeline.core.search.exact_cosine import cosine_pair_distances
from imgdedup_pipeline.core.search.result import NeighborSearch

# Rows searched and re-ranked at once: faiss' fast scan builds a lookup table per query
# (D / 4 x 16 floats: 12 KiB at D = 768), so 4,096 queries hold ~50 MiB of tables.
SEARCH_BLOCK_ROWS = 4_096
# Rows whose nearest centroids are found at once, rows filed into the index at once.
ASSIGN_BLOCK_ROWS = 16_384
# Rows per block of the refinement (its candidate lists: ~100 per row), and rows whose reverse
# edges are gathered in one pass over the top-k lists.
REFINE_BLOCK_ROWS = 8_192
REVERSE_BLOCK_ROWS = 131_072
# Similarity cells held at once by the exact scan of dense rows (256 MiB of float32).
DENSE_SCAN_CELLS = 1 << 26


@dataclass(frozen=True)
class IvfParameters:
    """Index parameters; `None` fields get the defaults of `IvfParameters.for_rows`.

    Attributes:
        nlist: inverted lists (k-means centroids). Default ~2 sqrt(N) (2,000 lists of ~500 rows
            at 1M): the one pass that finds each row's nearest centroids costs N x nlist x D, the
            list scans N x nprobe x N / nlist codes, and the k-means about nlist^2 x D, so the
            optimum sits near sqrt(nprobe x N) with the k-means pulling it lower. At most N / 16.
        nprobe: lists scanned per row. Default 8: the refinement rounds recover what the probes
            miss more cheaply than more probes do (BENCHMARKS.md); the scan time is linear in it.
        rerank: candidates per row taken from the index and re-ranked exactly. Default
            max(2 k, 32): the 4-bit fast-scan distance is coarse (median error ~0.02 in cosine
            after its per-query offset, measured at 100k rows), more than the gap between a row's
            nearest neighbours in a dense cluster, so the true top-k are looked for among twice as
            many candidates; 48 or 64 did not raise recall@1 on the synthetic set at 1M.
        refine_rounds: neighbour-graph refinement rounds (reverse edges + neighbours of the
            `refine_fanout` nearest neighbours), linear in N. Default 2: at 1M rows
            recall@1 was 0.96 after one round and 0.996 after two (0.76 -> 0.98 -> 1.0 from
            the index search at nprobe 12).
        refine_fanout: neighbours whose own neighbours are proposed (fanout^2 candidates per row,
            exactly re-ranked). Default 8.
        pq_subvectors: PQ sub-quantizers of 4 bits. Default D / 4 (4 dimensions each; 192 at 768).
        train_rows: rows sampled for k-means and PQ training. Default 16 x nlist, at least 10,000
            (k-means quality barely matters to the refined recall; its cost grows with the sample).
        kmeans_iterations: k-means iterations. Default 8.
        seed: seed of the training sample and of k-means.
    """

    nlist: int | None = None
    nprobe: int | None = None
    rerank: int | None = None
    refine_rounds: int = 2
    refine_fanout: int = 8
    pq_subvectors: int | None = None
    train_rows: int | None = None
    kmeans_iterations: int = 8
    seed: int = 0

    def for_rows(self, rows: int, dim: int, k: int) -> IvfParameters:
        """These parameters with every `None` replaced by its default for `rows` x `dim` rows."""
        nlist = self.nlist or max(1, min(int(round(2 * math.sqrt(rows))), rows // 16))
        return IvfParameters(
            nlist=nlist,
            nprobe=min(nlist, self.nprobe or 8),
            rerank=max(1, min(rows - 1, self.rerank or max(2 * k, 32))),
            refine_rounds=self.refine_rounds,
            refine_fanout=self.refine_fanout,
            pq_subvectors=self.pq_subvectors or _pq_subvectors(dim),
            train_rows=min(rows, self.train_rows or max(16 * nlist, 10_000)),
            kmeans_iterations=self.kmeans_iterations,
            seed=self.seed,
        )


@dataclass(frozen=True)
class IndexedSearch(NeighborSearch):
    """`NeighborSearch` from `search_neighbors_ivf`, with the keys of what was read.

    Attributes:
        keys: (M,) the keys of the rows, in row order, when the input was record batches; else None.
    """

    keys: np.ndarray | None = None


def faiss_module():
    """Import faiss-cpu, or say how to install it."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the indexed neighbour search needs faiss-cpu: pip install 'imgdedup-pipeline[scale]' "
            "(or pip install faiss-cpu==1.15.1)"
        ) from exc
    return faiss


def search_neighbors_ivf(
    source: np.ndarray | Iterable[tuple[object, np.ndarray]],
    k: int,
    radius: float,
    *,
    rows: int | None = None,
    parameters: IvfParameters = IvfParameters(),
) -> IndexedSearch:
    """Each row's k nearest other rows and the pairs within `radius` (cosine distance), through an
    IVF index: the contract of the exact search, approximate recall, exact distances. Below a few
    thousand rows the exact search is faster (`core.search.choose.choose_engine` takes it there).

    Args:
        source: either (N, D) L2-normalised float32 rows (used in place when already float32 and
            C-contiguous), or an iterable of (keys, vectors) record batches, e.g.
            `lancedb_batches(table)`; batches are L2-normalised as they are read, and their keys
            come back in `IndexedSearch.keys`.
        k: neighbours kept per row (clipped to N - 1).
        radius: pairs with `1 - cos <= radius` are returned.
        rows: how many rows the batches hold, when known: the float32 array is then allocated
            once (without it, batches are gathered and concatenated: twice the memory for a moment).
        parameters: index parameters (see `IvfParameters`).

    Returns:
        IndexedSearch: topk_index / topk_distance (N, k) ascending (ties by row), -1 / +inf
        padded; close pairs (left < right) sorted by (left, right), distances exact; keys.

    Raises:
        ValueError: fewer than two rows or k < 1 (nothing to index).
    """
    keys = None
    if isinstance(source, np.ndarray):
        vectors = np.ascontiguousarray(source, dtype=np.float32)
    else:
        keys, vectors = read_batches(source, rows)
    count = len(vectors)
    k = max(0, min(k, count - 1))
    if k == 0:
        raise ValueError(
            f"the indexed search needs k >= 1 and at least 2 rows, got k={k} over {count} rows; use the exact search"
        )

    dim = vectors.shape[1]
    params = parameters.for_rows(count, dim, k)
    search = _Search(vectors, k, radius, params)
    search.run()
    topk_index, topk_distance, left, right, distance = search.result()
    del search, vectors  # for batches, the only full copy: gone before the int64 copy is made
    return IndexedSearch(topk_index.astype(np.int64), topk_distance, left, right, distance, keys=keys)


def _pq_subvectors(dim: int) -> int:
    """The largest even divisor of `dim` that is at most dim / 4 (4-bit fast scan needs an even count)."""
    for m in range(max(2, dim // 4), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 1


def _resolved(value: int | None, name: str) -> int:
    """A parameter that `IvfParameters.for_rows` sets; None means the parameters were not resolved."""
    if value is None:
        raise ValueError(f"IvfParameters.{name} is None: pass the parameters through IvfParameters.for_rows first")
    return value


class _Search:
    """The steps of `search_neighbors_ivf` over one float32 array; state kept between them."""

    def __init__(self, vectors: np.ndarray, k: int, radius: float, params: IvfParameters):
        self.faiss = faiss_module()
        self.vectors = vectors
        self.count, self.dim = vectors.shape
        self.k = k
        self.radius = radius
        self.params = params
        # The parameters `IvfParameters.for_rows` resolves, as ints.
        self.nlist = _resolved(params.nlist, "nlist")
        self.nprobe = _resolved(params.nprobe, "nprobe")
        self.rerank = _resolved(params.rerank, "rerank")
        self.pq_subvectors = _resolved(params.pq_subvectors, "pq_subvectors")
        self.train_rows = _resolved(params.train_rows, "train_rows")
        # Pairs are looked for among similarities above this floor, then re-checked exactly.
        self.min_similarity = np.float32(1.0 - radius - 1e-5)
        # (N, k) int32 rows and float32 distances, allocated by `_search` once the index is built.
        self.topk_index: np.ndarray
        self.topk_distance: np.ndarray
        self.lefts: list[np.ndarray] = []
        self.rights: list[np.ndarray] = []
        self.dense: list[np.ndarray] = []

    def run(self) -> None:
        steps = [self._train_centroids, self._assign, self._build_index, self._search]
        for step in [*steps, *[self._refine] * self.params.refine_rounds, self._scan_dense_rows]:
            step()
            release_free_heap()  # each step's freed temporaries, back to the OS before the next

    # Index ---------------------------------------------------------------------------------

    def _sample(self) -> np.ndarray:
        rng = np.random.default_rng(self.params.seed)
        return self.vectors[np.sort(rng.choice(self.count, size=self.train_rows, replace=False))]

    def _train_centroids(self) -> None:
        faiss, params = self.faiss, self.params
        kmeans = faiss.Kmeans(
            self.dim,
            self.nlist,
            niter=params.kmeans_iterations,
            seed=params.seed,
            spherical=True,
            max_points_per_centroid=self.train_rows // self.nlist + 1,  # use the whole sample
            min_points_per_centroid=1,
        )
        kmeans.train(self._sample())
        self.quantizer = faiss.IndexFlatIP(self.dim)
        self.quantizer.add(kmeans.centroids)

    def _assign(self) -> None:
        """Each row's `nprobe` nearest centroids, nearest first (column 0 files the row)."""
        self.probes = np.empty((self.count, self.nprobe), dtype=np.int32)
        for start in range(0, self.count, ASSIGN_BLOCK_ROWS):
            _, nearest = self.quantizer.search(self.vectors[start : start + ASSIGN_BLOCK_ROWS], self.nprobe)
            self.probes[start : start + len(nearest)] = nearest

    def _build_index(self) -> None:
        faiss = self.faiss
        if self.dim % self.pq_subvectors:
            raise ValueError(f"pq_subvectors={self.pq_subvectors} does not divide the vector dimension {self.dim}")
        # Filled through IndexIVFPQ, which takes precomputed lists, then packed for fast scan.
        ivfpq = faiss.IndexIVFPQ(
            self.quantizer, self.dim, self.nlist, self.pq_subvectors, 4, faiss.METRIC_INNER_PRODUCT
        )
        ivfpq.by_residual = False  # codes of the vectors themselves: one lookup table per query
        threads = faiss.omp_get_max_threads()
        try:
            # PQ training runs one tiny k-means per sub-quantizer; with several OpenMP threads on
            # a loaded machine their barriers cost more than the work, so it runs on one thread.
            faiss.omp_set_num_threads(1)
            ivfpq.train(self._sample())
        finally:
            faiss.omp_set_num_threads(threads)
        for start in range(0, self.count, 4 * ASSIGN_BLOCK_ROWS):
            stop = min(start + 4 * ASSIGN_BLOCK_ROWS, self.count)
            lists = np.ascontiguousarray(self.probes[start:stop, 0], dtype=np.int64)
            ivfpq.add_core(stop - start, faiss.swig_ptr(self.vectors[start:stop]), None, faiss.swig_ptr(lists))
        self.index = faiss.IndexIVFPQFastScan(ivfpq)  # copies the codes, shares the quantizer
        # faiss' wrapper keeps its constructor's first argument alive (meant for a quantizer):
        # here that is the IndexIVFPQ, whose copy of the codes would stay resident.
        self.index.referenced_objects = [self.quantizer]
        del ivfpq
        self.index.nprobe = self.nprobe

    # Search --------------------------------------------------------------------------------

    def _inner_products(
        self, rows: np.ndarray, candidates: np.ndarray, queries: np.ndarray | None = None
    ) -> np.ndarray:
        """(len(rows), c) exact float32 <row, candidate>, read in place; -inf where candidate < 0."""
        candidates = np.ascontiguousarray(candidates, dtype=np.int64)
        queries = np.ascontiguousarray(self.vectors[rows]) if queries is None else queries
        out = np.empty(candidates.shape, dtype=np.float32)
        f = self.faiss
        f.fvec_inner_products_by_idx(
            f.swig_ptr(out),
            f.swig_ptr(queries),
            f.swig_ptr(self.vectors),
            f.swig_ptr(candidates),
            self.dim,
            len(rows),
            candidates.shape[1],
        )
        return out

    def _search(self) -> None:
        # int32 rows while searching (64 MiB less at 1M x 16); int64 in the result.
        self.topk_index = np.full((self.count, self.k), -1, dtype=np.int32)
        self.topk_distance = np.full((self.count, self.k), np.inf, dtype=np.float32)
        depth = self.rerank
        order = np.argsort(self.probes[:, 0], kind="stable")  # rows grouped by their list
        for start in range(0, self.count, SEARCH_BLOCK_ROWS):
            rows = order[start : start + SEARCH_BLOCK_ROWS]
            queries = self.vectors[rows]
            _, found = self.index.search_preassigned(queries, depth + 1, self.probes[rows], None)  # + 1: itself
            found[found == rows[:, None]] = -1
            similarity = self._inner_products(rows, found, queries)
            self._merge(rows, found, similarity)
            # Every candidate within the radius: the row may have more close rows than
            # candidates; it is scanned exactly at the end.
            close = similarity >= self.min_similarity
            self.dense.append(rows[close.sum(axis=1) >= depth])
        del self.index, self.probes, self.quantizer

    def _merge(
        self,
        rows: np.ndarray,
        candidates: np.ndarray,
        similarity: np.ndarray,
        reverse: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Fold exact candidates into the rows' top-k (rows unique), and keep the close pairs.

        Args:
            rows: (B,) row numbers; candidates (B, C) with -1 for none; similarity (B, C) exact.
            reverse: optional extra (position in rows, candidate, distance) edges.
        """
        valid = candidates >= 0
        distance = cosine_distance(similarity)
        close = valid & (similarity >= self.min_similarity)
        row, position = np.nonzero(close)
        self.lefts.append(rows[row])
        self.rights.append(candidates[row, position])

        local = np.arange(len(rows))
        parts_row = [np.repeat(local, self.k), np.nonzero(valid)[0]]
        parts_candidate = [self.topk_index[rows].ravel().astype(np.int64), candidates[valid]]
        parts_distance = [self.topk_distance[rows].ravel(), distance[valid]]
        if reverse is not None:
            parts_row.append(reverse[0])
            parts_candidate.append(reverse[1])
            parts_distance.append(reverse[2])
        edge_row = np.concatenate(parts_row)
        edge_candidate = np.concatenate(parts_candidate)
        edge_distance = np.concatenate(parts_distance).astype(np.float32)
        keep = edge_candidate >= 0
        edge_row, edge_candidate, edge_distance = edge_row[keep], edge_candidate[keep], edge_distance[keep]
        # Each (row, candidate) once (its distance is the same exact value wherever it came from),
        # then ascending distance, ties by candidate, and the first k per row.
        unique = np.unique(edge_row * self.count + edge_candidate, return_index=True)[1]
        edge_row, edge_candidate, edge_distance = edge_row[unique], edge_candidate[unique], edge_distance[unique]
        ranked = np.lexsort((edge_candidate, edge_distance, edge_row))
        edge_row, edge_candidate, edge_distance = edge_row[ranked], edge_candidate[ranked], edge_distance[ranked]
        first = np.searchsorted(edge_row, local)
        rank = np.arange(len(edge_row)) - first[edge_row]
        inside = rank < self.k
        new_index = np.full((len(rows), self.k), -1, dtype=np.int64)
        new_distance = np.full((len(rows), self.k), np.inf, dtype=np.float32)
        new_index[edge_row[inside], rank[inside]] = edge_candidate[inside]
        new_distance[edge_row[inside], rank[inside]] = edge_distance[inside]
        self.topk_index[rows] = new_index
        self.topk_distance[rows] = new_distance

    def _refine(self) -> None:
        """Reverse edges and neighbours of neighbours, exactly re-ranked, folded into the top-k."""
        fanout = min(self.params.refine_fanout, self.k)
        span = REVERSE_BLOCK_ROWS
        for reverse_start in range(0, self.count, span):
            reverse_stop = min(reverse_start + span, self.count)
            # Who lists these rows among their top-k (the distances are already exact), grouped
            # by listed row: one pass over the top-k per span of rows, never a sort of all edges.
            source, slot = np.nonzero((self.topk_index >= reverse_start) & (self.topk_index < reverse_stop))
            target = self.topk_index[source, slot].astype(np.int64)
            distance = self.topk_distance[source, slot]
            order = np.argsort(target, kind="stable")
            source, target, distance = source[order], target[order], distance[order]
            del slot, order
            bounds = np.searchsorted(target, np.arange(reverse_start, reverse_stop + 1))
            for start in range(reverse_start, reverse_stop, REFINE_BLOCK_ROWS):
                stop = min(start + REFINE_BLOCK_ROWS, reverse_stop)
                rows = np.arange(start, stop)
                neighbours = self.topk_index[rows, :fanout].astype(np.int64)
                proposals = self.topk_index[np.maximum(neighbours, 0), :fanout].reshape(len(rows), -1).astype(np.int64)
                proposals[np.repeat(neighbours < 0, fanout, axis=1)] = -1
                proposals[proposals == rows[:, None]] = -1
                similarity = self._inner_products(rows, proposals)
                low, high = bounds[start - reverse_start], bounds[stop - reverse_start]
                reverse_row = target[low:high] - start
                self._merge(rows, proposals, similarity, (reverse_row, source[low:high], distance[low:high]))

    def _scan_dense_rows(self) -> None:
        dense = np.unique(np.concatenate(self.dense)) if self.dense else np.empty(0, np.int64)
        chunk = max(1, DENSE_SCAN_CELLS // max(1, self.count))
        for start in range(0, len(dense), chunk):
            rows = dense[start : start + chunk]
            row, column = np.nonzero(self.vectors[rows] @ self.vectors.T >= self.min_similarity)
            self.lefts.append(rows[row])
            self.rights.append(column)

    def result(self):
        left = np.concatenate(self.lefts).astype(np.int64) if self.lefts else np.empty(0, np.int64)
        right = np.concatenate(self.rights).astype(np.int64) if self.rights else np.empty(0, np.int64)
        keep = left != right
        low, high = np.minimum(left[keep], right[keep]), np.maximum(left[keep], right[keep])
        code = np.unique(low * self.count + high)  # sorted by (left, right), each pair once
        left, right = code // self.count, code % self.count
        distance = cosine_pair_distances(self.vectors, left, right)
        within = distance <= self.radius
        return self.topk_index, self.topk_distance, left[within], right[within], distance[within]

"""Exact nearest-neighbour search, streamed in row chunks: cosine distance over L2-normalised
vectors, and rotation/flip-invariant Hamming distance over perceptual hashes.

Never holds an N x N matrix: each chunk of rows is compared against all rows and reduced to its
top-k neighbours and its close pairs before the next chunk starts. On CPUs with bf16 matrix units
the cosine search multiplies in bf16 to pick candidates and decides in float32 (same answer as
the float32 search; see `_search_neighbors_bf16`).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.distances import cosine_distance, invariant_hamming_matrix, nearest_first

DEFAULT_CHUNK_ROWS = 2048
MAX_BLOCK_CELLS = 1 << 26
# bf16 candidate search (see `_search_neighbors_bf16`): candidates kept per row beyond k, entries
# per group of the group-max prefilter, and the size below which the float32 path is used.
BF16_MARGIN = 16
BF16_GROUP = 16
BF16_MIN_ROWS = 4096  # from 5k rows up the bf16 path was faster (1.2x at 5k, 1.8x at 10k)
BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest is within 2^-8
FP32_UNIT_ROUNDOFF = 2.0**-24
PRECISIONS = ("auto", "bf16", "fp32")
# Threads for the bf16 path's reductions (memory-bound, many small ops); None: chosen by timing
# (`ReductionThreads`). At 100k rows on 2 cores, two threads ran them 1.3x faster than one on an
# idle machine, and one thread 1.2-1.7x faster than two on a busy one (no waiting at OpenMP
# barriers for a descheduled thread).
REDUCTION_THREADS: int | None = None
REDUCTION_PROBE_EVERY = 16  # chunks between two timings of each thread count


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


def search_neighbors(
    vectors: np.ndarray,
    k: int,
    radius: float,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    precision: str = "auto",
    margin: int = BF16_MARGIN,
    group: int = BF16_GROUP,
    block_cells: int = MAX_BLOCK_CELLS,
) -> NeighborSearch:
    """Find each row's k nearest other rows and every pair within `radius` (cosine distance).

    Both precisions return the float32 answer. The bf16 path multiplies in bf16 only to choose
    candidates, under a proven error bound (`bf16_error_bound`); every distance it returns is a
    float32 dot product, and rows it cannot certify are recomputed in float32.

    Args:
        vectors: (M, D) L2-normalised float32 rows.
        k: neighbours kept per row (clipped to M - 1).
        radius: pairs with `1 - cos <= radius` are returned (cosine distance, in [0, 2]).
        chunk_rows: rows multiplied at once (at most what fits `block_cells`).
        precision: "fp32" (float32 products everywhere), "bf16" (bf16 candidates, float32
            re-rank) or "auto": bf16 when the CPU multiplies bf16 natively and M >= BF16_MIN_ROWS.
        margin: bf16 path: candidates kept per row beyond k.
        group: bf16 path: entries per group of the group-max prefilter.
        block_cells: the similarity block held at once, in float32 cells (256 MiB by default),
            so that memory stays flat as M grows.

    Returns:
        NeighborSearch with distances clipped to [0, 2]; top-k ascending by distance, ties by
        index; pairs sorted by (left, right).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if precision == "auto":
        precision = "bf16" if len(vectors) >= BF16_MIN_ROWS and bf16_matmul_is_fast() else "fp32"
    if precision == "bf16":
        return _search_neighbors_bf16(vectors, k, radius, chunk_rows, margin, group, block_cells)
    return _search_neighbors_fp32(vectors, k, radius, chunk_rows, block_cells)


def bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16 via oneDNN).

    Without them a bf16 product is emulated and slower than float32, so the float32 path is used.
    """
    global _BF16_FAST
    if _BF16_FAST is None:
        try:
            import torch

            _BF16_FAST = bool(
                torch.backends.mkldnn.is_available()
                and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
            )
        except (AttributeError, RuntimeError, ImportError):
            _BF16_FAST = False
    return _BF16_FAST


_BF16_FAST: bool | None = None


def _search_neighbors_fp32(
    vectors: np.ndarray, k: int, radius: float, chunk_rows: int, block_cells: int = MAX_BLOCK_CELLS, only: tuple[int, int] | None = None
) -> NeighborSearch:
    """The float32 search: each chunk of rows times all rows, reduced by `torch.topk`.

    The reference for the bf16 path, and the path on CPUs without fast bf16. `only=(start, stop)`
    searches those rows only (benchmarks time it on a sample): other rows keep -1 / inf, and only
    pairs whose left row is among them are found.
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
    first, last = only if only is not None else (0, rows)
    with torch.inference_mode():
        for start in range(first, last, chunk_rows):
            stop = min(start + chunk_rows, last)
            local = torch.arange(stop - start)
            similarity = every[start:stop] @ every.T
            similarity[local, local + start] = -torch.inf  # a row is not its own neighbour
            if k:
                values, index = torch.topk(similarity, k, dim=1, largest=True, sorted=True)
                topk_index[start:stop], topk_distance[start:stop] = nearest_first(index.numpy(), cosine_distance(values.numpy()))
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
    return _finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius)


def _finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius) -> NeighborSearch:
    """Keep candidate pairs with left < right whose float32 distance is within `radius`."""
    left = np.concatenate(lefts).astype(np.int64) if lefts else np.empty(0, np.int64)
    right = np.concatenate(rights).astype(np.int64) if rights else np.empty(0, np.int64)
    keep = left < right
    left, right = left[keep], right[keep]
    distance = cosine_distance(np.einsum("ij,ij->i", vectors[left], vectors[right])).astype(np.float32)
    within = distance <= radius
    left, right, distance = left[within], right[within], distance[within]
    order = np.lexsort((right, left))
    return NeighborSearch(topk_index, topk_distance, left[order], right[order], distance[order])


def bf16_error_bound(vectors: np.ndarray) -> float:
    """E such that |bf16_product - fp32_product| <= E + 2^-8 |bf16_product| for any two rows.

    bf16_product: both rows rounded to bf16, multiplied with float32 accumulation, the sum rounded
    to bf16 (torch's bf16 matmul on oneDNN); fp32_product: any float32 dot product of the rows.
    """
    import torch

    every = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    return _error_bound(every, every.to(torch.bfloat16))


def _error_bound(every, low, rows_at_once: int = 8192) -> float:
    """`bf16_error_bound` of float32 rows `every` whose bf16 rounding is `low`.

    Derivation. Write x = b + r with b = bf16(x) (round to nearest: |r_i| <= 2^-8 |x_i|; r is exact
    in float32). Then x.y - b_x.b_y = b_x.r_y + r_x.b_y + r_x.r_y, so by Cauchy-Schwarz
    |x.y - b_x.b_y| <= 2 B R + R^2, B and R the largest row norms of b and r. (For unit rows
    R <= 2^-8, i.e. <= 2^-7 + 2^-16 without measuring; measured R is about 0.4 * 2^-8.)
    Products of two bf16 numbers are exact in float32; their float32 sum over D terms, in any
    order, is within g_D sum|b_x,i b_y,i| <= g_D B^2 of b_x.b_y (g_D = D u / (1 - D u), u = 2^-24),
    and rounding the sum to bf16 moves it by <= 2^-8 |result|. A float32 dot product of x and y is
    within g_D |x| |y| <= g_D N^2 of x.y (N the largest row norm); the fp32 search's product of a
    non-candidate is compared with the re-rank's product of a candidate, itself within 2 g_D N^2 of
    the fp32 search's, hence 3 g_D N^2. Total: E = 2 B R + R^2 + g_D B^2 + 3 g_D N^2.
    Denormals flushed to zero by the bf16 units add < 1e-30 a term: covered by the 1e-12.
    """
    import torch

    dims = every.shape[1]
    b = r = n = 0.0
    for start in range(0, len(every), rows_at_once):
        exact, rounded = every[start : start + rows_at_once], low[start : start + rows_at_once].float()
        b = max(b, float(torch.linalg.vector_norm(rounded, dim=1).max()))
        r = max(r, float(torch.linalg.vector_norm(exact - rounded, dim=1).max()))
        n = max(n, float(torch.linalg.vector_norm(exact, dim=1).max()))
    gamma = dims * FP32_UNIT_ROUNDOFF / (1.0 - dims * FP32_UNIT_ROUNDOFF)
    # The norms are float32 sums (relative error <= g_D): 1e-3 relative slack covers them.
    b, r, n = (value * (1.0 + 1e-3) for value in (b, r, n))
    return 2.0 * b * r + r * r + gamma * (b * b + 3.0 * n * n) + 1e-12


def _upper(value, bound: float):
    """Largest float32 product a bf16 product `value` can stand for (-inf stays -inf)."""
    value = np.asarray(value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(value), -np.inf, value + bound + BF16_UNIT_ROUNDOFF * np.abs(value))


def _lower(value, bound: float):
    """Smallest float32 product a bf16 product `value` can stand for."""
    value = np.asarray(value, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(value), -np.inf, value - bound - BF16_UNIT_ROUNDOFF * np.abs(value))


def _below_bf16(target, bound: float):
    """Threshold t: every bf16 product s < t has `_upper(s) < target` (inverse of `_upper`, rounded down)."""
    reach = np.asarray(target, dtype=np.float64) - bound
    s = np.where(reach >= 0, reach / (1.0 + BF16_UNIT_ROUNDOFF), reach / (1.0 - BF16_UNIT_ROUNDOFF))
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(s), -np.inf, s - 1e-6 * (1.0 + np.abs(s)))  # 1e-6 covers float32's rounding of `1 - s`


def _search_neighbors_bf16(vectors: np.ndarray, k: int, radius: float, chunk_rows: int, margin: int, group: int, block_cells: int) -> NeighborSearch:
    """The float32 answer, with bf16 products only choosing which float32 products to compute.

    Per chunk of n rows, all rows times the chunk in bf16 (AMX: ~4x float32's rate here) give a
    (W, n) block, reduced to candidates; every distance returned is a float32 dot product.
    With K = k + margin, per chunk row (a column of the block):

    1. Groups: group q holds entries q, q + W/g, q + 2W/g, ... (g = `group`), so group maxima are
       an elementwise max of g slabs. The K largest values lie in the K groups with the largest
       maxima (found the same way one level up when W is large). G_j: the j-th largest group
       maximum; every value outside those K groups is <= G_K.
    2. Re-rank: the K groups' values that can still reach the k-th float32 product
       (`_upper(v) >= _lower(G_k)`) get float32 products; the top k by float32 (ties by index).
    3. Certificate: every row not re-ranked has float32 product <= _upper(G_K), or
       < _lower(G_k) <= f_k (the k-th float32 product found). A row with _upper(G_K) < f_k has
       its exact float32 top-k; other rows (dense clusters, bf16 ties) are recomputed in float32.
    4. Close pairs: bf16 values below `pair_floor` cannot be pairs. A row with G_K < pair_floor
       has all its pair candidates among the K groups; other rows are scanned whole. Every
       candidate is re-checked in float32 as `1 - s <= radius`, as the float32 search does.

    `block_cells` float32 cells of memory hold twice as many bf16 cells.
    """
    import torch

    rows, dims = vectors.shape
    k = max(0, min(k, rows - 1))
    keep = k + max(1, margin)
    group = max(1, group)
    width = -(-rows // (group * group)) * group * group  # columns, padded for two levels of groups
    chunk = max(1, min(chunk_rows, 2 * block_cells // width))
    every = torch.from_numpy(vectors)
    topk_index = np.full((rows, k), -1, dtype=np.int64)
    topk_distance = np.full((rows, k), np.inf, dtype=np.float32)
    lefts, rights, uncertain = [], [], []
    with torch.inference_mode():
        low = torch.zeros((width, dims), dtype=torch.bfloat16)
        low[:rows] = every.to(torch.bfloat16)  # padding rows are zero vectors: product 0, masked below
        bound = _error_bound(every, low[:rows])
        # A bf16 number itself, so that comparing bf16 data with it (torch casts the scalar to
        # bf16) rounds nothing.
        pair_floor = _bf16_at_most(float(_below_bf16(1.0 - radius, bound)))
        buffer = torch.empty(chunk * width, dtype=torch.bfloat16)
        threads = ReductionThreads(REDUCTION_THREADS)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            # (W, n): all rows times the chunk's. oneDNN reformats the second operand for its bf16
            # tiles on every call, so the small one goes there (~1.3-1.7x faster than chunk x all).
            block = buffer[: width * (stop - start)].view(width, stop - start)
            torch.mm(low, low[start:stop].T, out=block)
            with threads.timed(stop - start):
                local = torch.arange(stop - start)
                block[local + start, local] = -torch.inf  # a row is not its own neighbour
                block[rows:] = -torch.inf  # padding
                maxima, columns, values = _top_groups(block, keep, group)
                top = maxima[:, -1].numpy()  # G_K
                columns, values = columns.numpy(), values.numpy()
                # Close pairs: from the K groups, or from the whole row where G_K >= pair_floor.
                dense = np.nonzero(top >= pair_floor)[0]
                row, position = np.nonzero(values >= pair_floor)
                sparse = top[row] < pair_floor
                lefts.append(row[sparse] + start)
                rights.append(columns[row[sparse], position[sparse]])
                if len(dense):
                    column, row = torch.nonzero(block[:, torch.from_numpy(dense)] >= pair_floor, as_tuple=True)
                    lefts.append(dense[row.numpy()] + start)
                    rights.append(column.numpy())
                if k:
                    # Candidates that can still reach the k-th float32 product: _upper(v) >= _lower(G_k).
                    reach = _float32_at_most(_below_bf16(_lower(maxima[:, k - 1].numpy(), bound), bound))
                    found, kth, short = _rerank(every, start, columns, values, reach, k, 2 * keep)
                    topk_index[start:stop], topk_distance[start:stop] = found
                    certified = ~short & (_upper(top, bound) < kth)
                    uncertain.append(np.nonzero(~certified)[0] + start)
        del buffer, block
    uncertain = np.concatenate(uncertain) if uncertain else np.empty(0, np.int64)
    if len(uncertain):
        topk_index[uncertain], topk_distance[uncertain] = _search_rows_fp32(vectors, uncertain, k, block_cells)
    return _finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius)


class ReductionThreads:
    """Thread count for the bf16 path's per-chunk reductions, chosen by timing them.

    Whether one thread or all of torch's is faster depends on the machine's load, which changes
    during a long search: every `probe_every` chunks each count runs one chunk, timed per column,
    and the faster count runs the chunks in between. The answer does not depend on the count.
    """

    def __init__(self, fixed: int | None = None, probe_every: int = REDUCTION_PROBE_EVERY):
        import torch

        most = torch.get_num_threads()
        self.counts = [fixed] if fixed is not None else sorted({1, most})
        self.probe_every = max(len(self.counts) + 1, probe_every)
        self.seconds_per_column = dict.fromkeys(self.counts, 0.0)
        self.chunks = 0

    def current(self) -> int:
        position = self.chunks % self.probe_every
        if position < len(self.counts):
            return self.counts[position]
        return min(self.counts, key=self.seconds_per_column.__getitem__)

    @contextmanager
    def timed(self, columns: int):
        """Run the block's reductions with the chosen count; time them if this chunk is a probe."""
        count = self.current()
        probing = self.chunks % self.probe_every < len(self.counts)
        started = time.perf_counter()
        with _threads(count):
            yield
        if probing:
            self.seconds_per_column[count] = (time.perf_counter() - started) / max(1, columns)
        self.chunks += 1


@contextmanager
def _threads(count: int | None):
    """Run torch ops with `count` threads (None: unchanged), restoring the setting after."""
    import torch

    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _top_groups(block, keep: int, group: int):
    """The `keep` groups with the largest maxima in each column of `block` (see step 1).

    `block` is (W, n): column r holds chunk row r's products with all W rows. Group q of a column
    holds its entries q, q + W/g, q + 2W/g, ..., so group maxima are an elementwise max of g
    contiguous slabs (one pass over the block at memory speed).

    Returns (maxima (n, keep) float32 descending, members (n, keep * group) int64: the rows of
    those groups, values (n, keep * group) float32: the products there).
    """
    import torch

    width, height = block.shape
    stride = width // group
    if group == 1 or stride < keep:  # too few groups: every entry is its own group
        maxima, members = torch.topk(block.T, min(keep, width), dim=1, sorted=True)
        return maxima.float(), members, maxima.float()
    maxima = block.view(group, stride, height).amax(dim=0)  # (W/g, n)
    offsets = torch.arange(0, width, stride)
    if stride // group >= 4 * keep:  # one level up: groups of groups, found the same way
        upper = maxima.view(group, stride // group, height).amax(dim=0)
        chosen = torch.topk(upper.T.contiguous(), keep, dim=1, sorted=False).indices
        groups = (chosen.unsqueeze(2) + offsets[:group] // group).view(height, keep * group)
        value, position = torch.topk(_take(maxima, groups), keep, dim=1, sorted=True)
        chosen = torch.gather(groups, 1, position)
    else:
        value, chosen = torch.topk(maxima.T.contiguous(), keep, dim=1, sorted=True)
    members = (chosen.unsqueeze(2) + offsets).view(height, keep * group)
    return value.float(), members, _take(block, members).float()


def _take(matrix, rows):
    """out[r, j] = matrix[rows[r, j], r]: `index_select` on the flat matrix (~3x faster than `gather`)."""
    import torch

    flat = rows * matrix.shape[1] + torch.arange(matrix.shape[1]).unsqueeze(1)
    return matrix.reshape(-1).index_select(0, flat.view(-1)).view(rows.shape)


def _rerank(every, start: int, columns: np.ndarray, values: np.ndarray, reach: np.ndarray, k: int, most: int, rows_at_once: int = 128):
    """float32 top-k of rows start.. among their candidates with bf16 value >= reach (per row).

    A row's candidates form one (c, D) x (D, 1) product of a batched matmul: the same float32 sums
    as the float32 search's GEMM (bit for bit with MKL), so both paths report equal distances.
    Rows are batched by candidate count to keep padding small.

    Returns ((index, distance) each (rows, k), in ascending distance, ties by index; the k-th
    largest float32 product (rows,); short (rows,): rows with fewer than k candidates or more
    than `most`, left for the float32 search).
    """
    import torch

    rows = len(values)
    row, position = np.nonzero((values >= reach[:, None]) & (values > -np.inf))  # sorted by row
    count = np.bincount(row, minlength=rows)
    first = np.cumsum(count) - count
    candidates = columns[row, position]
    short = (count < k) | (count > most)
    index_out = np.full((rows, k), -1, dtype=np.int64)
    distance_out = np.full((rows, k), np.inf, dtype=np.float32)
    kth = np.full(rows, -np.inf)
    by_count = np.argsort(count, kind="stable")
    by_count = by_count[~short[by_count]]
    for begin in range(0, len(by_count), rows_at_once):
        batch = by_count[begin : begin + rows_at_once]
        width = int(count[batch].max())
        valid = np.arange(width) < count[batch, None]
        column = candidates[np.where(valid, first[batch, None] + np.arange(width), first[batch, None])]
        gathered = every.index_select(0, torch.from_numpy(column.reshape(-1))).view(len(batch), width, -1)
        similarity = torch.bmm(gathered, every[torch.from_numpy(batch + start)].unsqueeze(2)).squeeze(2).numpy()
        similarity = np.where(valid, similarity, -np.inf)
        # The k largest products (ties by index), as the float32 search's top-k picks them ...
        index, negated_similarity = nearest_first(column, -similarity, k)
        kth[batch] = -negated_similarity[:, -1]
        # ... then ordered by ascending (clipped) distance, ties by index.
        index_out[batch], distance_out[batch] = nearest_first(index, cosine_distance(-negated_similarity))
    return (index_out, distance_out), kth, short


def _float32_at_most(value) -> np.ndarray:
    """float32 values <= the given float64 values (rounded down), so float32 comparisons lose nothing."""
    value = np.asarray(value, dtype=np.float64)
    single = value.astype(np.float32)
    return np.where(single > value, np.nextafter(single, np.float32(-np.inf)), single)


def _search_rows_fp32(vectors: np.ndarray, rows_wanted: np.ndarray, k: int, block_cells: int):
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


def _bf16_at_most(value: float) -> float:
    """The largest bf16 number <= value (so that comparing bf16 data with it loses nothing)."""
    single = np.float32(value)
    if single > value:
        single = np.nextafter(single, np.float32(-np.inf))
    bits = np.array([single], dtype=np.float32).view(np.uint32)
    truncated = bits & np.uint32(0xFFFF0000)  # toward zero
    if single < 0 and truncated[0] != bits[0]:
        truncated += np.uint32(0x10000)  # one bf16 step further from zero
    return float(truncated.view(np.float32)[0])


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
            topk_index[start:stop], topk_distance[start:stop] = nearest_first(part, np.take_along_axis(distance, part, axis=1))
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
    topk_index, topk_distance = nearest_first(index, distance, max(0, min(k, index.shape[1])))
    pairs = pd.DataFrame(
        {
            "left": np.concatenate([s.pair_left for s in searches]),
            "right": np.concatenate([s.pair_right for s in searches]),
            "distance": np.concatenate([s.pair_distance for s in searches]),
        }
    ).groupby(["left", "right"], as_index=False, sort=True)["distance"].min()
    return NeighborSearch(
        topk_index=topk_index,
        topk_distance=topk_distance,
        pair_left=pairs["left"].to_numpy(np.int64),
        pair_right=pairs["right"].to_numpy(np.int64),
        pair_distance=pairs["distance"].to_numpy(np.float32),
    )


def scaled(search: NeighborSearch, factor: float) -> NeighborSearch:
    """The same search with every distance multiplied by `factor` (maps a signal onto a scale)."""
    return NeighborSearch(search.topk_index, search.topk_distance * np.float32(factor), search.pair_left, search.pair_right, search.pair_distance * np.float32(factor))


def cosine_distances_from(vectors: np.ndarray, row: int) -> np.ndarray:
    """(M,) cosine distances from one row to every row, clipped to [0, 2]."""
    return cosine_distance(vectors @ vectors[row])


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
    return _search(rows, k, radius_bits, chunk_rows, lambda start, stop: invariant_hamming_matrix(hashes[start:stop], by_variant))


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

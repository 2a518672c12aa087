"""The bf16 candidate filter of the exact cosine search: on CPUs that multiply bf16 natively, the
products are computed in bf16 only to choose candidates, under a proven error bound, and every
distance returned is a float32 dot product; rows it cannot certify are searched again in float32.
The answer is `core.search.exact_cosine.search_neighbors_fp32`'s (tests/core/test_neighbors.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from imgdedup_pipeline.core.distances import cosine_distance, nearest_first
from imgdedup_pipeline.core.search.exact_cosine import finish_pairs, search_rows_fp32
from imgdedup_pipeline.core.search.result import NeighborSearch

# bf16 candidate search (see `search_neighbors_bf16`): candidates kept per row beyond k, entries
# per group of the group-max prefilter, and the size below which the float32 path is used.
BF16_MARGIN = 16
BF16_GROUP = 16
BF16_MIN_ROWS = 4096  # below this the bf16 set-up (rounding, error bound) outweighs its faster products
BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest is within 2^-8
FP32_UNIT_ROUNDOFF = 2.0**-24
# Threads for the bf16 path's reductions (memory-bound, many small ops); None: chosen by timing
# (`ReductionThreads`), because the faster count depends on the machine's load.
REDUCTION_THREADS: int | None = None
REDUCTION_PROBE_EVERY = 16  # chunks between two timings of each thread count


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
        return np.where(
            np.isneginf(s), -np.inf, s - 1e-6 * (1.0 + np.abs(s))
        )  # 1e-6 covers float32's rounding of `1 - s`


def search_neighbors_bf16(
    vectors: np.ndarray, k: int, radius: float, chunk_rows: int, margin: int, group: int, block_cells: int
) -> NeighborSearch:
    """The float32 answer, with bf16 products only choosing which float32 products to compute.

    Per chunk of n rows, all rows times the chunk in bf16 (AMX multiplies bf16 faster) give a
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
    lefts, rights, uncertain_parts = [], [], []
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
            # tiles on every call, so the small one goes there.
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
                    dense_column, dense_row = torch.nonzero(
                        block[:, torch.from_numpy(dense)] >= pair_floor, as_tuple=True
                    )
                    lefts.append(dense[dense_row.numpy()] + start)
                    rights.append(dense_column.numpy())
                if k:
                    # Candidates that can still reach the k-th float32 product: _upper(v) >= _lower(G_k).
                    reach = _float32_at_most(_below_bf16(_lower(maxima[:, k - 1].numpy(), bound), bound))
                    found, kth, short = _rerank(every, start, columns, values, reach, k, 2 * keep)
                    topk_index[start:stop], topk_distance[start:stop] = found
                    certified = ~short & (_upper(top, bound) < kth)
                    uncertain_parts.append(np.nonzero(~certified)[0] + start)
        del buffer, block
    uncertain = np.concatenate(uncertain_parts) if uncertain_parts else np.empty(0, np.int64)
    if len(uncertain):
        topk_index[uncertain], topk_distance[uncertain] = search_rows_fp32(vectors, uncertain, k, block_cells)
    return finish_pairs(vectors, topk_index, topk_distance, lefts, rights, radius)


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
    """out[r, j] = matrix[rows[r, j], r]: `index_select` on the flat matrix (faster than `gather`)."""
    import torch

    flat = rows * matrix.shape[1] + torch.arange(matrix.shape[1]).unsqueeze(1)
    return matrix.reshape(-1).index_select(0, flat.view(-1)).view(rows.shape)


def _rerank(
    every,
    start: int,
    columns: np.ndarray,
    values: np.ndarray,
    reach: np.ndarray,
    k: int,
    most: int,
    rows_at_once: int = 128,
):
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

"""Sub-quadratic rotation/flip-invariant Hamming search over perceptual hashes: every pair within a
radius, and each row's nearest rows among those pairs, by multi-index hashing.

over 400 lines: one algorithm (tables, probes, overflow, pair rules) whose parts share invariants.

The exact search (`core.search.exact_hamming`) compares every row with every row. A pHash only
counts within its cutoff (SPEC.md, "several signals"), so the pipeline needs only the pairs within
the radius, and those are found exactly here (`core.search.signals.HashSignal`).

Distance (`core.distances.invariant_hamming`): rows i, j of an (M, V) uint64 array (identity
variant in column 0) are d(i, j) = min over v of H(id_i, var_v j) and H(var_v i, id_j). So
d(i, j) <= r iff some identity is within r of some variant of the other row: a join of the M
identities against the M * V variants (the "entries"). Each row's identity queries the entries;
the other direction of a pair is covered when the other row queries.

Multi-index hashing (pigeonhole): the 64 bits are cut into m disjoint substrings, substring t
probed within r_t bits with sum(r_t + 1) > r (`core.search.mih_plan`). If H(a, b) <= r, some
substring has d_t(a, b) <= r_t (otherwise H = sum d_t >= sum(r_t + 1) > r). Per substring, the
entries are bucketed by their substring key, and each query looks up every key within r_t of its
own; every entry found is verified with the full 64-bit Hamming distance. Nothing within the
radius is missed, and every distance returned is exact.

Layout (numpy only):

* a table holds `slots` entries per bucket inline, padded ((2**bits, slots) uint64), so that a
  probe is one row gather, then xor / popcount / compare over long arrays; bucket entries beyond
  `slots` (crowded buckets: clusters of near-identical images) are flagged and read from the
  bucket-sorted entries in bounded pieces, so that a pathological bucket costs time, not memory;
* queries are sorted by key, so that a run of probes reads the table in key order, and masks by
  their bits above an L2-sized slice of the table (cache locality);
* each (query, entry) match is kept once: only by the first substring that finds it, for the
  entry's first variant within the radius, and, when both rows' identities find the other, only
  on the smaller row's side. So pairs never need a global de-duplication, and memory is bounded by
  the blocks plus the answer itself (which is quadratic in the size of a cluster of copies).

Timings: BENCHMARKS.md (bench/hash_index.py). faiss' `IndexBinaryMultiHash.range_search` was
measured too and is far slower for all-pairs queries; not used.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from imgdedup_pipeline.core.distances import identity_to_variant_bits
from imgdedup_pipeline.core.search.exact_hamming import HASH_BITS, as_hash_matrix, search_hash_pairs, topk_from_pairs
from imgdedup_pipeline.core.search.mih_plan import Substring, check_plan, plan_substrings
from imgdedup_pipeline.core.search.result import NeighborSearch

MAX_ROWS = 300_000_000  # `topk_from_pairs` packs (row, bits, row) into one int64: 65 M^2 < 2^63
# Probe blocks: a block of queries spans about one L2-sized slice of a table, a block of probes
# holds ~CHUNK_PROBES probes (its buffers stay in L2).
SLICE_BYTES = 512 << 10
CHUNK_PROBES = 1 << 18  # large enough that numpy's loops, not Python, hold the time (threads)
CHUNK_CELLS = 1 << 19  # gathered inline cells per run of probes (4 MiB)
# Matches / overflow entries handled at once (bounds memory in crowded buckets: ~40 bytes each).
BATCH_ENTRIES = 1 << 20
SINK_BLOCK = 1 << 17  # matches checked at once by the pair rules
MAX_WORKERS = 8
OVERFLOW_WINDOW = 4  # a crowded bucket's next entries read as one dense block ...
OVERFLOW_BLOCK = 1 << 14  # ... for this many probes at a time


def search_hash_neighbors_within(
    hashes: np.ndarray,
    k: int,
    radius_bits: float,
    *,
    plan: tuple[Substring, ...] | None = None,
    workers: int | None = None,
) -> NeighborSearch:
    """Every pair within `radius_bits` and each row's up-to-k nearest rows among those, through
    the substring tables: the answer of `core.search.exact_hamming.search_hash_pairs`, sub-quadratic.

    Args:
        hashes: (M, V) uint64 (or int64 bit patterns), identity variant in column 0.
        k: neighbours kept per row (clipped to M - 1).
        radius_bits: pairs with distance <= radius_bits are returned.
        plan: the substrings (default `plan_substrings(..., allow_exact=False)`); tests pass their
            own. A radius of 64 bits or more has no plan (every pair is within it): then the exact
            search answers.
        workers: threads probing the index (default: the CPU count, at most MAX_WORKERS).

    Returns:
        NeighborSearch: pairs (left < right) sorted by (left, right) with float32 bit distances;
        top-k: for each row the k nearest rows within the radius, ascending by distance, ties by
        smaller index, padded with -1 / +inf (shape (M, min(k, M - 1))).
    """
    hashes = as_hash_matrix(hashes)
    rows, variants = hashes.shape
    radius = math.floor(min(radius_bits, HASH_BITS))  # distances are whole bits
    if rows > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} rows, got {rows}; split the hashes")
    if plan is None and rows >= 2 and radius >= 0 and variants:
        plan = plan_substrings(rows, variants, radius, allow_exact=False)
    if plan is None or rows < 2 or radius < 0 or variants == 0:
        return search_hash_pairs(hashes, k, radius_bits)
    workers = workers if workers is not None else min(MAX_WORKERS, os.cpu_count() or 1)
    left, right, distance = _index_pairs(hashes, radius, plan, max(1, workers))
    index, dist = topk_from_pairs(rows, max(0, min(k, rows - 1)), left, right, distance)
    return NeighborSearch(index, dist, left, right, distance)


def _index_pairs(hashes: np.ndarray, radius: int, plan: tuple[Substring, ...], workers: int = 1):
    """(left, right, distance) of every pair within `radius`, through the substring tables."""
    check_plan(plan, radius)
    rows, variants = hashes.shape
    identity = np.ascontiguousarray(hashes[:, 0])
    entries = hashes.reshape(-1)  # entry e is variant e % V of row e // V
    kept = _PairSink(hashes, radius, plan)
    for number, sub in enumerate(plan):
        table = _Table(entries, variants, sub)
        for query_row, entry in table.matches(identity, radius, workers):
            kept.add(query_row, entry, number)
        del table
    return kept.result()


class _Table:
    """One substring's entries, bucketed by key.

    inline: (2**bits, slots) uint64, a bucket's first `slots` entries; the other cells hold a
        pad whose key is the complement of the bucket's, so that it is more than r_t bits from the
        key of any query that probes this bucket (pads that still match are dropped on decoding).
    crowded: (2**bits,) bool, buckets with more than `slots` entries.
    order, starts, sorted_hash: the entries sorted by key, bucket b at
        [starts[b], starts[b + 1]); crowded buckets are read from `sorted_hash`.
    """

    def __init__(self, entries: np.ndarray, variants: int, sub: Substring):
        self.sub, self.entries, self.variants = sub, entries, variants
        buckets = 1 << sub.bits
        key = ((entries >> np.uint64(sub.shift)) & np.uint64(buckets - 1)).astype(np.int32)
        index_type = np.int32 if len(entries) < 2**31 else np.int64
        self.order = np.argsort(key).astype(index_type)  # any order within a bucket will do
        counts = np.bincount(key, minlength=buckets)
        self.starts: np.ndarray = np.zeros(buckets + 1, dtype=index_type)
        np.cumsum(counts, out=self.starts[1:])
        self.crowded = counts > sub.slots
        del counts
        self.sorted_hash = entries[self.order]
        sorted_key = key[self.order]
        del key
        pad = np.arange(buckets, dtype=np.uint64)
        np.invert(pad, out=pad)
        np.bitwise_and(pad, np.uint64(buckets - 1), out=pad)
        np.left_shift(pad, np.uint64(sub.shift), out=pad)
        self.inline = np.empty((buckets, sub.slots), dtype=np.uint64)
        self.inline[:] = pad[:, None]
        del pad
        cells = self.inline.reshape(-1)
        for start in range(0, len(entries), BATCH_ENTRIES):  # file the first `slots` of each bucket
            bucket = sorted_key[start : start + BATCH_ENTRIES].astype(np.int64)
            rank = np.arange(start, start + len(bucket)) - self.starts[bucket]
            inline = np.flatnonzero(rank < sub.slots)
            cells[bucket[inline] * sub.slots + rank[inline]] = self.sorted_hash[start + inline]

    def matches(self, identity: np.ndarray, radius: int, workers: int = 1):
        """Yield (query rows, entries), bounded batches: every pair with d_t <= r_t and
        H(identity[query], entries[entry]) <= radius, once each, except an entry of the query's
        own row.

        Queries are sorted by key and cut into blocks whose keys span about one SLICE_BYTES slice
        of `inline`; masks are sorted by their bits above the slice, so that a run of probes reads
        few slices. `workers` threads take contiguous runs of blocks (numpy releases the GIL in
        its loops).
        """
        sub, slots = self.sub, self.sub.slots
        buckets = 1 << sub.bits
        key = ((identity >> np.uint64(sub.shift)) & np.uint64(buckets - 1)).astype(np.int64)
        order = np.argsort(key)
        queries = _Queries(order, key[order], identity[order])
        slice_bits = min(sub.bits, max(0, int(math.log2(max(1, SLICE_BYTES // (8 * slots))))))
        masks = _masks(sub.bits, sub.radius)
        masks = masks[np.lexsort((masks, masks >> slice_bits))]
        chunk_probes = max(1, min(CHUNK_PROBES, CHUNK_CELLS // slots))
        block = int(min(chunk_probes, max(64, round(len(order) * 2.0**slice_bits / buckets))))
        starts = list(range(0, len(order), block))
        parts = [starts[i * len(starts) // workers : (i + 1) * len(starts) // workers] for i in range(max(1, workers))]
        runs = [self._probe(queries, masks, part, block, chunk_probes, radius) for part in parts if part]
        yield from (runs[0] if len(runs) == 1 else _in_threads(runs))

    def _probe(
        self, queries: _Queries, masks: np.ndarray, blocks: list[int], block: int, chunk_probes: int, radius: int
    ):
        """`matches` for the query blocks starting at `blocks`."""
        slots, variants = self.sub.slots, self.variants
        per_chunk = max(1, chunk_probes // block)
        probe_buf = np.empty(per_chunk * block, np.int64)
        gather_buf = np.empty(per_chunk * block * slots, np.uint64)
        count_buf = np.empty(per_chunk * block * slots, np.uint8)
        close_buf = np.empty(per_chunk * block * slots, bool)
        crowded_buf = np.empty(per_chunk * block, bool)
        hash_slots = np.empty(block * slots, np.uint64)
        found_query, found_entry, spill_query, spill_key = [], [], [], []
        found = spilled = 0
        for first in blocks:
            last = min(first + block, len(queries.key))
            n = last - first
            keys = queries.key[first:last]
            hashes = hash_slots[: n * slots].reshape(n, slots)
            hashes[:] = queries.hash[first:last, None]  # one per inline slot: long inner loops
            for m0 in range(0, len(masks), per_chunk):
                chunk = masks[m0 : m0 + per_chunk]
                f = len(chunk)
                probe = probe_buf[: f * n].reshape(f, n)
                np.bitwise_xor(chunk[:, None], keys[None, :], out=probe)
                gathered = gather_buf[: f * n * slots].reshape(f, n, slots)
                np.take(self.inline, probe, axis=0, out=gathered, mode="clip")
                flat = gathered.reshape(f, n * slots)
                np.bitwise_xor(flat, hashes.reshape(1, -1), out=flat)
                count = count_buf[: f * n * slots]
                np.bitwise_count(gathered.reshape(-1), out=count)
                if count.min() <= radius:  # most runs of probes match nothing: skip the scan
                    close = close_buf[: f * n * slots]
                    np.less_equal(count, radius, out=close)
                    hit = np.flatnonzero(close)
                    at, slot = np.divmod(hit, slots)
                    bucket = probe.reshape(-1)[at]
                    position = self.starts[bucket] + slot
                    query = queries.order[first + at % n]
                    keep = position < self.starts[bucket + 1]  # not a pad
                    entry = self.order[position[keep]]
                    query = query[keep]
                    keep = entry // variants != query  # a row's own variants
                    found_query.append(query[keep])
                    found_entry.append(entry[keep])
                    found += len(found_query[-1])
                crowded = crowded_buf[: f * n].reshape(f, n)
                np.take(self.crowded, probe, out=crowded, mode="clip")
                spill = np.flatnonzero(crowded)
                if len(spill):
                    spill_query.append(first + spill % n)
                    spill_key.append(probe.reshape(-1)[spill])
                    spilled += len(spill)
                if found >= BATCH_ENTRIES:
                    yield _concat(found_query), _concat(found_entry)
                    found_query, found_entry, found = [], [], 0
                if spilled >= BATCH_ENTRIES // (2 * OVERFLOW_WINDOW):
                    yield from self._overflow(queries, _concat(spill_query), _concat(spill_key), radius)
                    spill_query, spill_key, spilled = [], [], 0
        if found:
            yield _concat(found_query), _concat(found_entry)
        if spilled:
            yield from self._overflow(queries, _concat(spill_query), _concat(spill_key), radius)

    def _overflow(self, queries: _Queries, query_at: np.ndarray, key: np.ndarray, radius: int):
        """Matches among crowded buckets' entries beyond the inline slots: the next OVERFLOW_WINDOW
        entries of each as one dense (window, probes) block, the rest (very crowded buckets only)
        BATCH_ENTRIES at a time."""
        window = np.arange(OVERFLOW_WINDOW)[:, None]
        last = len(self.sorted_hash) - 1
        for first in range(0, len(key), OVERFLOW_BLOCK):
            at, bucket = query_at[first : first + OVERFLOW_BLOCK], key[first : first + OVERFLOW_BLOCK]
            begin = self.starts[bucket].astype(np.int64) + self.sub.slots
            end = self.starts[bucket + 1].astype(np.int64)
            position = begin + window  # (window, probes)
            close = np.bitwise_count(self.sorted_hash[np.minimum(position, last)] ^ queries.hash[at]) <= radius
            close &= position < end
            hit = np.flatnonzero(close)
            if len(hit):
                yield self._own_row_dropped(queries.order[at[hit % len(at)]], self.order[position.reshape(-1)[hit]])
            longer = np.flatnonzero(end > begin + OVERFLOW_WINDOW)
            for owner, position in _ranges_in_pieces(begin[longer] + OVERFLOW_WINDOW, end[longer], BATCH_ENTRIES):
                close = np.bitwise_count(self.sorted_hash[position] ^ queries.hash[at[longer[owner]]]) <= radius
                yield self._own_row_dropped(queries.order[at[longer[owner[close]]]], self.order[position[close]])

    def _own_row_dropped(self, query: np.ndarray, entry: np.ndarray):
        keep = entry // self.variants != query
        return query[keep], entry[keep]


@dataclass(frozen=True)
class _Queries:
    """The identities sorted by one table's key: row numbers, keys, hashes."""

    order: np.ndarray
    key: np.ndarray
    hash: np.ndarray


def _in_threads(runs: list, queued: int = 4):
    """Items of the generators `runs`, each iterated in its own thread, as they come.

    A bounded queue keeps at most `queued` batches waiting; a worker's exception is raised here.
    """
    results: queue.Queue = queue.Queue(maxsize=queued)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Queue `item` (waiting while the queue is full); False once the consumer has stopped."""
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work(run) -> None:
        try:
            for item in run:
                if not put(item):
                    return
            outcome = done
        except BaseException as error:  # handed to the consumer
            outcome = error
        put(outcome)

    threads = [threading.Thread(target=work, args=(run,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            item = results.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _ranges_in_pieces(begin: np.ndarray, end: np.ndarray, budget: int):
    """Yield (owner, position): the positions of ranges [begin, end), about `budget` at a time,
    with the index of the range each came from; one range longer than the budget is cut."""
    length = end - begin
    total = np.cumsum(length)
    done, at = 0, 0
    while at < len(begin):
        stop = int(np.searchsorted(total, done + budget, side="right"))
        if stop > at:  # whole ranges at..stop-1
            owner = np.repeat(np.arange(at, stop), length[at:stop])
            offset = np.arange(len(owner)) - np.repeat(total[at:stop] - length[at:stop] - done, length[at:stop])
            yield owner, begin[owner] + offset
            done, at = int(total[stop - 1]), stop
        else:  # one range longer than the budget
            for first in range(int(begin[at]), int(end[at]), budget):
                position = np.arange(first, min(first + budget, int(end[at])))
                yield np.full(len(position), at), position
            done, at = int(total[at]), at + 1


def _masks(bits: int, radius: int) -> np.ndarray:
    """All keys of `bits` bits with at most `radius` bits set (xor masks of a probe)."""
    masks = [0]
    for weight in range(1, min(bits, radius) + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in combinations(range(bits), weight))
    return np.array(masks, dtype=np.int64)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


class _PairSink:
    """Keeps each pair within the radius once, as the matches stream in.

    A match (i, e) says H(id_i, variant v of row j) <= r with (j, v) = divmod(e, V), found by
    substring t. It is kept only if
      * j != i,
      * no earlier substring finds it (d_t' > r_t' for every t' < t),
      * v is row j's first variant within r of id_i, and
      * row j's identity finds none of row i's variants, or i < j (both sides find the pair:
        the smaller row keeps it).
    Each pair within the radius is found by at least one side, exactly once per side with these
    rules, so it is kept exactly once. Its distance is the full d(i, j), both ways. Pairs are
    held as one int64 each, (left * M + right) * 65 + bits, which sorts by (left, right).
    """

    def __init__(self, hashes: np.ndarray, radius: int, plan: tuple[Substring, ...]):
        self.hashes, self.radius, self.plan = hashes, radius, plan
        self.packed: list[np.ndarray] = []

    def add(self, query_row: np.ndarray, entry: np.ndarray, table_number: int) -> None:
        for start in range(0, len(entry), SINK_BLOCK):  # (n, V) temporaries: bounded
            self._add(query_row[start : start + SINK_BLOCK], entry[start : start + SINK_BLOCK], table_number)

    def _add(self, query_row: np.ndarray, entry: np.ndarray, table_number: int) -> None:
        hashes, radius = self.hashes, self.radius
        variants = hashes.shape[1]
        row, variant = np.divmod(entry.astype(np.int64), variants)
        query_row = query_row.astype(np.int64)
        keep = row != query_row
        if table_number:
            xor = hashes[query_row, 0] ^ hashes.reshape(-1)[entry]
            for earlier in self.plan[:table_number]:
                keep &= np.bitwise_count(xor & np.uint64(earlier.mask)) > earlier.radius
        i, j, variant = query_row[keep], row[keep], variant[keep]
        forward = identity_to_variant_bits(hashes[i], hashes[j])
        keep = np.argmax(forward <= radius, axis=1) == variant
        i, j, forward = i[keep], j[keep], forward[keep]
        backward = identity_to_variant_bits(hashes[j], hashes[i])
        keep = ~(backward <= radius).any(axis=1) | (i < j)
        i, j = i[keep], j[keep]
        bits = np.minimum(forward[keep].min(axis=1), backward[keep].min(axis=1))
        self.packed.append((np.minimum(i, j) * len(hashes) + np.maximum(i, j)) * (HASH_BITS + 1) + bits)

    def result(self):
        """(left, right, distance) sorted by (left, right)."""
        packed = np.concatenate(self.packed) if self.packed else np.empty(0, np.int64)
        self.packed = []
        packed.sort()
        pair, bits = np.divmod(packed, HASH_BITS + 1)
        del packed
        left, right = np.divmod(pair, len(self.hashes))
        return left, right, bits.astype(np.float32)

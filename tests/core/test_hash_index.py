"""core.search.mih: the multi-index search returns exactly the exact search's pairs, and each row's
nearest rows within the radius (ties by index), on data built to hit every way a pair can match."""

import numpy as np
import pytest

import imgdedup_pipeline.core.search.mih as hash_index
from imgdedup_pipeline.core.search.engines import IndexedHamming
from imgdedup_pipeline.core.search.exact_hamming import (
    hamming_distances_of_rows,
    search_hash_neighbors,
    search_hash_pairs,
)
from imgdedup_pipeline.core.search.mih_plan import Substring, plan_substrings
from imgdedup_pipeline.core.search.signals import hash_pairs_within


def search_within(hashes: np.ndarray, k: int, radius: float, method: str = "auto", **options):
    """The pairs within `radius` and top-k among them: `index` (multi-index hashing, `options` =
    plan / workers), `exact`, or `auto` (the engine the chooser takes, as the hash signal does)."""
    if method == "auto":
        return hash_pairs_within(hashes, k, int(radius))[0]
    if method == "exact":
        return search_hash_pairs(hashes, k, radius)
    return IndexedHamming(**options).build(hashes).search(k, radius)


def flip(value: np.uint64, rng, bits: int, within: range = range(64)) -> np.uint64:
    """`value` with `bits` distinct bits flipped, chosen among `within`."""
    chosen = rng.choice(np.array(within), size=bits, replace=False)
    return value ^ np.uint64(sum(1 << int(b) for b in chosen))


def planted(rows: int, variants: int, radius: int, seed: int) -> np.ndarray:
    """Random hashes with near copies at 0..radius+2 bits: plain copies (identity near identity),
    rotated copies (the copy's variants are the original's, rotated: both identities lie near a
    variant of the other), one-sided copies (only the copy's identity lies near one of the
    original's variants), clusters of exact duplicates (ties), and identical identities with
    different variants."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, (rows, variants), dtype=np.uint64, endpoint=False)
    targets = rng.permutation(np.arange(1, rows))[: rows // 3]
    for number, target in enumerate(targets):
        source = int(rng.integers(0, target))  # copies of earlier rows, so chains form too
        bits = int(rng.integers(0, radius + 3))
        kind = number % 4
        if kind == 0:  # plain near copy
            hashes[target] = hashes[source]
            hashes[target, 0] = flip(hashes[source, 0], rng, bits)
        elif kind == 1 and variants > 1:  # rotated near copy
            turn = int(rng.integers(1, variants))
            hashes[target] = np.roll(hashes[source], -turn)
            hashes[target, 0] = flip(hashes[target, 0], rng, bits)
        elif kind == 2 and variants > 1:  # one-sided: id_target ~ var_v source only
            hashes[target, 0] = flip(hashes[source, int(rng.integers(1, variants))], rng, bits)
        else:  # exact duplicate row
            hashes[target] = hashes[source]
    hashes[rows // 2 : rows // 2 + 5] = hashes[rows // 2]  # a cluster of 5 duplicates: ties at k
    if variants > 1:
        hashes[rows // 3 + 1, 0] = hashes[rows // 3, 0]  # same identity, other variants
    return hashes


def reference_topk(hashes: np.ndarray, k: int, radius: float):
    """Each row's k nearest other rows within `radius`, ascending by distance, ties by index."""
    rows = len(hashes)
    k = max(0, min(k, rows - 1))
    index = np.full((rows, k), -1, np.int64)
    distance = np.full((rows, k), np.inf, np.float32)
    if rows == 0 or k == 0:
        return index, distance
    full = hamming_distances_of_rows(hashes, np.arange(rows))
    np.fill_diagonal(full, np.inf)
    for row in range(rows):
        near = np.flatnonzero(full[row] <= radius)
        near = near[np.lexsort((near, full[row, near]))][:k]
        index[row, : len(near)] = near
        distance[row, : len(near)] = full[row, near]
    return index, distance


def assert_exact(hashes: np.ndarray, k: int, radius: float, **options):
    """The index search agrees with search_hash_neighbors on pairs, top-k distances within the
    radius, and with the definition (ties by index) on top-k rows. Returns the search."""
    got = search_within(hashes, k, radius, **options)
    exact = search_hash_neighbors(hashes, k, radius)
    np.testing.assert_array_equal(got.pair_left, exact.pair_left)
    np.testing.assert_array_equal(got.pair_right, exact.pair_right)
    np.testing.assert_array_equal(got.pair_distance, exact.pair_distance)
    assert got.pair_left.dtype == got.pair_right.dtype == np.int64 and got.pair_distance.dtype == np.float32
    # search_hash_neighbors' top-k holds rows beyond the radius too; where it is within, the
    # distances agree entry by entry (its rows may differ only among ties at the k-th place).
    within = np.where(exact.topk_distance <= radius, exact.topk_distance, np.float32(np.inf))
    np.testing.assert_array_equal(got.topk_distance, within)
    index, distance = reference_topk(hashes, k, radius)
    np.testing.assert_array_equal(got.topk_index, index)
    np.testing.assert_array_equal(got.topk_distance, distance)
    assert got.topk_index.dtype == np.int64 and got.topk_distance.dtype == np.float32
    return got


def boundary_pairs(plan, radius: int, rows: int, variants: int, seed: int) -> np.ndarray:
    """Random rows plus, for each substring t, pairs at distance exactly `radius` that only t can
    find: d_t = r_t and d_t' = r_t' + 1 elsewhere (needs sum(r_t + 1) = radius + 1). One pair is
    identity against identity, one identity against another row's variant."""
    assert sum(sub.radius + 1 for sub in plan) == radius + 1
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, (rows, variants), dtype=np.uint64, endpoint=False)
    row = 0
    for only in plan:
        for variant in (0, variants - 1):
            target = hashes[row, variant]
            for sub in plan:
                target = flip(target, rng, sub.radius + (sub is not only), range(sub.shift, sub.shift + sub.bits))
            hashes[row + 1, 0] = target
            row += 2
    return hashes


@pytest.mark.parametrize("variants", [8, 1])
@pytest.mark.parametrize("seed", [0, 1])
def test_radius_10_planted_copies_match_the_exact_search(variants, seed):
    hashes = planted(1500, variants, 10, seed)
    got = assert_exact(hashes, 8, 10, method="index")
    assert len(got.pair_left) > 300  # the planted copies are there
    assert (got.topk_index[:, 0] >= 0).sum() > 400


def test_other_radii_and_float_radius():
    hashes = planted(1000, 8, 6, seed=2)
    for radius in (0, 1, 3, 6, 6.5, 14):
        assert_exact(hashes, 5, radius, method="index")


def test_every_substring_boundary_is_found_and_a_radius_too_small_misses_it(monkeypatch):
    plan = (Substring(0, 20, 3, 2), Substring(20, 23, 3, 1), Substring(43, 21, 2, 3))
    hashes = boundary_pairs(plan, 10, 400, 8, seed=3)
    got = assert_exact(hashes, 4, 10, method="index", plan=plan)
    found = set(zip(got.pair_left.tolist(), got.pair_right.tolist()))
    assert {(2 * i, 2 * i + 1) for i in range(2 * len(plan))} <= found
    assert set(got.pair_distance[np.isin(got.pair_left, np.arange(0, 12, 2))].tolist()) == {10.0}
    # The pigeonhole check refuses a plan one bit short ...
    for t in range(len(plan)):
        short = tuple(Substring(s.shift, s.bits, s.radius - (i == t), s.slots) for i, s in enumerate(plan))
        with pytest.raises(ValueError):
            search_within(hashes, 4, 10, method="index", plan=short)
        # ... and without the check, such a plan loses exactly the pairs only t could find.
        monkeypatch.setattr(hash_index, "check_plan", lambda plan, radius: None)
        missed = search_within(hashes, 4, 10, method="index", plan=short)
        monkeypatch.undo()
        lost = found - set(zip(missed.pair_left.tolist(), missed.pair_right.tolist()))
        assert {(4 * t, 4 * t + 1), (4 * t + 2, 4 * t + 3)} <= lost


def test_planned_substrings_cover_the_boundaries():
    for rows, variants in ((400, 8), (400, 1), (100_000, 8), (1_000_000, 8)):
        plan = plan_substrings(rows, variants, 10, allow_exact=False)
        assert sum(sub.bits for sub in plan) == 64 and sum(sub.radius + 1 for sub in plan) == 11
    plan = plan_substrings(400, 8, 10, allow_exact=False)
    assert_exact(boundary_pairs(plan, 10, 400, 8, seed=4), 4, 10, method="index")


def test_duplicates_and_ties_break_by_index():
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**64, (300, 8), dtype=np.uint64, endpoint=False)
    hashes[10:40] = hashes[10]  # 30 identical rows: 29 ties at distance 0 for k = 4
    hashes[50:60] = hashes[50]
    hashes[50:60, 0] = [flip(hashes[50, 0], rng, b) for b in (0, 1, 1, 2, 2, 2, 3, 3, 10, 11)]
    got = assert_exact(hashes, 4, 10, method="index")
    np.testing.assert_array_equal(got.topk_index[10], [11, 12, 13, 14])
    np.testing.assert_array_equal(got.topk_index[39], [10, 11, 12, 13])
    assert_exact(hashes, 4, 0, method="index")


def test_crowded_buckets_and_pieces(monkeypatch):
    """5% of rows share one hash and 10% lie within 2 bits of it: buckets far beyond their inline
    slots. Small batches force the overflow through many pieces, one bucket cut across several."""
    rng = np.random.default_rng(6)
    hashes = planted(2000, 8, 10, seed=6)
    hashes[100:200] = hashes[100]
    for row in range(200, 400):
        hashes[row, 0] = flip(hashes[100, 0], rng, int(rng.integers(0, 3)))
    plan = (Substring(0, 16, 2, 1), Substring(16, 16, 2, 2), Substring(32, 16, 2, 1), Substring(48, 16, 1, 1))
    expected = assert_exact(hashes, 16, 10, method="index", plan=plan)
    assert len(expected.pair_left) > 300 * 299 / 2
    monkeypatch.setattr(hash_index, "BATCH_ENTRIES", 64)
    monkeypatch.setattr(hash_index, "OVERFLOW_BLOCK", 32)
    monkeypatch.setattr(hash_index, "CHUNK_PROBES", 256)
    monkeypatch.setattr(hash_index, "CHUNK_CELLS", 256)
    got = search_within(hashes, 16, 10, method="index", plan=plan, workers=2)
    for field in ("topk_index", "topk_distance", "pair_left", "pair_right", "pair_distance"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


def test_ranges_in_pieces_cover_every_position_once():
    begin = np.array([0, 10, 10, 30, 100])
    end = np.array([3, 10, 25, 31, 170])
    for budget in (1, 4, 16, 1000):
        pieces = list(hash_index._ranges_in_pieces(begin, end, budget))
        assert all(len(position) <= budget for _, position in pieces)
        owner = np.concatenate([o for o, _ in pieces])
        position = np.concatenate([p for _, p in pieces])
        expected = np.concatenate([np.arange(b, e) for b, e in zip(begin, end)])
        np.testing.assert_array_equal(position, expected)
        np.testing.assert_array_equal(owner, np.repeat(np.arange(5), end - begin))


@pytest.mark.parametrize("rows", [0, 1, 2, 3])
def test_tiny_inputs_and_k_beyond_the_rows(rows):
    rng = np.random.default_rng(rows)
    hashes = rng.integers(0, 2**64, (rows, 8), dtype=np.uint64, endpoint=False)
    if rows >= 2:
        hashes[1, 0] = flip(hashes[0, 2], rng, 3)
    for method in ("index", "auto", "exact"):
        got = assert_exact(hashes, 5, 10, method=method)
        assert got.topk_index.shape == (rows, max(0, min(5, rows - 1)))
    if rows >= 2:
        assert got.pair_left.tolist()[:1] == [0] and got.pair_right.tolist()[:1] == [1]
    assert search_within(hashes, 0, 10).topk_index.shape == (rows, 0)


def test_threads_auto_and_int64_input_agree():
    hashes = planted(3000, 8, 10, seed=7)
    one = search_within(hashes, 16, 10, method="index", workers=1)
    for got in (
        search_within(hashes, 16, 10, method="index", workers=3),
        search_within(hashes.view(np.int64), 16, 10, method="index", workers=2),
        search_within(hashes, 16, 10, method="exact"),
        search_within(hashes, 16, 10),
    ):
        for field in ("topk_index", "topk_distance", "pair_left", "pair_right", "pair_distance"):
            np.testing.assert_array_equal(getattr(got, field), getattr(one, field))


def test_a_failing_worker_raises():
    def failing():
        yield 1
        raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"):
        list(hash_index._in_threads([failing(), iter(range(100))]))


def test_sparse_hashes_and_narrow_substrings():
    """Hashes with few bits set (flat images) and 8-bit substrings: bucket pads (a bucket key's
    complement, other bits clear) then lie within the radius of many queries and must be told from
    entries."""
    rng = np.random.default_rng(8)
    hashes = np.zeros((600, 8), np.uint64)
    for row in range(600):
        for variant in range(8):
            hashes[row, variant] = flip(np.uint64(0), rng, int(rng.integers(0, 12)))
    plan = tuple(Substring(8 * t, 8, 1 if t < 3 else 0, 1 + t % 3) for t in range(8))
    got = assert_exact(hashes, 16, 10, method="index", plan=plan)
    assert len(got.pair_left) > 50_000

"""core.search.engines.search_neighbors: the bf16 candidate path returns the float32 answer exactly.

The float32 path (`precision="fp32"`) is the reference. The bf16 path must give the same top-k
neighbour sets (ties at the k-th distance aside), the same distances, and the same close pairs, on
clustered data with exact copies, near duplicates and dense clusters, and on vectors that bf16
cannot tell apart.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import imgdedup_pipeline.core.search.bf16 as bf16
from imgdedup_pipeline.core.search.bf16 import BF16_UNIT_ROUNDOFF, bf16_error_bound
from imgdedup_pipeline.core.search.choose import choose_engine
from imgdedup_pipeline.core.search.engines import search_neighbors
from imgdedup_pipeline.core.search.result import l2_normalize

K = 16
RADIUS = 0.1


def clustered(rows: int = 3000, dims: int = 64, seed: int = 0) -> np.ndarray:
    """Unit rows: clusters (cosine ~0.7 within), 2 % exact copies, 3 % near duplicates (~0.999),
    and dense clusters whose rows have far more than k neighbours inside the radius."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((rows // 20, dims))
    vectors = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, dims))
    # Dense clusters: 40 rows at cosine distance ~0.0005 from each other (bf16 cannot rank them),
    # 30 rows at ~0.08 (inside the radius, far enough apart for bf16 to rank some of them).
    dense = rng.choice(rows, size=min(rows, 110), replace=False)
    for members, spread in ((dense[:40], 0.02), (dense[40:80], 0.02), (dense[80:], 0.3)):
        if not len(members):
            continue
        vectors[members] = rng.standard_normal(dims) + spread * rng.standard_normal((len(members), dims))
    vectors = l2_normalize(vectors)
    copies = rng.choice(rows, size=(rows // 50, 2), replace=False)
    vectors[copies[:, 1]] = vectors[copies[:, 0]]
    near = rng.choice(rows, size=(rows * 3 // 100, 2), replace=False)
    vectors[near[:, 1]] = vectors[near[:, 0]] + 0.004 * rng.standard_normal((len(near), dims)).astype(np.float32)
    return l2_normalize(vectors)


def assert_same_answer(found, reference, vectors: np.ndarray) -> int:
    """Equal to the float32 reference; top-k sets may differ only by rows tied at the k-th
    distance. Returns the number of rows whose sets differ by such ties."""
    assert found.topk_index.shape == reference.topk_index.shape
    np.testing.assert_allclose(found.topk_distance, reference.topk_distance, atol=1e-6, rtol=0)
    tied_rows = 0
    for row in np.nonzero((np.sort(found.topk_index, axis=1) != np.sort(reference.topk_index, axis=1)).any(axis=1))[0]:
        differing = sorted(set(found.topk_index[row].tolist()) ^ set(reference.topk_index[row].tolist()))
        distance = np.clip(1.0 - vectors[differing] @ vectors[row], 0.0, 2.0)
        np.testing.assert_allclose(
            distance, reference.topk_distance[row, -1], atol=1e-6, rtol=0, err_msg=f"row {row}: not a tie"
        )
        tied_rows += 1
    np.testing.assert_array_equal(found.pair_left, reference.pair_left)
    np.testing.assert_array_equal(found.pair_right, reference.pair_right)
    np.testing.assert_array_equal(found.pair_distance, reference.pair_distance)
    return tied_rows


@pytest.fixture
def count_fallback(monkeypatch):
    """Counts the rows the bf16 path could not certify and recomputed in float32."""
    counted = []
    original = bf16.search_rows_fp32

    def counting(vectors, rows_wanted, k, block_cells):
        counted.extend(rows_wanted.tolist())
        return original(vectors, rows_wanted, k, block_cells)

    monkeypatch.setattr(bf16, "search_rows_fp32", counting)
    return counted


@pytest.mark.parametrize("group, chunk_rows", [(16, 512), (8, 1000), (4, 257), (1, 700)], ids=lambda v: str(v))
def test_bf16_path_equals_float32_path_on_clustered_data(group, chunk_rows, count_fallback):
    vectors = clustered()
    reference = search_neighbors(vectors, k=K, radius=RADIUS, precision="fp32")
    found = search_neighbors(vectors, k=K, radius=RADIUS, chunk_rows=chunk_rows, precision="bf16", group=group)
    tied_rows = assert_same_answer(found, reference, vectors)
    assert tied_rows < 0.05 * len(vectors)
    # The data has what it should: dense rows (k-th neighbour inside the radius), pairs, and rows
    # that bf16 could not certify (the tight dense clusters), recomputed in float32.
    assert (reference.topk_distance[:, -1] <= RADIUS).sum() >= 100
    assert len(reference.pair_left) > 1000
    assert 40 <= len(set(count_fallback)) < 0.1 * len(vectors)


@pytest.mark.parametrize("k, radius", [(0, 0.1), (1, 0.0), (3, 0.5), (40, 0.02)])
def test_bf16_path_equals_float32_path_for_other_k_and_radius(k, radius):
    vectors = clustered(rows=1500, seed=1)
    reference = search_neighbors(vectors, k=k, radius=radius, precision="fp32")
    found = search_neighbors(vectors, k=k, radius=radius, chunk_rows=400, precision="bf16", group=4)
    assert_same_answer(found, reference, vectors)


def test_bf16_path_on_tiny_inputs():
    vectors = clustered(rows=60, seed=2)
    for rows in (1, 2, 5, 33, 60):
        reference = search_neighbors(vectors[:rows], k=K, radius=RADIUS, precision="fp32")
        found = search_neighbors(vectors[:rows], k=K, radius=RADIUS, chunk_rows=7, precision="bf16")
        assert_same_answer(found, reference, vectors[:rows])


def below_bf16_resolution(variants: int, rows: int = 800, dims: int = 64, seed: int = 5):
    """Random unit rows, then row 0 and `variants` rows at cosine distance ~5e-4 from it: below
    the resolution of a bf16 product near 1 (2^-9..2^-8), distinct in float32."""
    rng = np.random.default_rng(seed)
    vectors = l2_normalize(rng.standard_normal((rows, dims)))
    planted = np.arange(1, variants + 1)
    vectors[planted] = vectors[0] + (0.03 / np.sqrt(dims)) * rng.standard_normal((variants, dims)).astype(np.float32)
    return l2_normalize(vectors), planted


@pytest.mark.parametrize("variants", [12, 100], ids=["fewer-than-candidates", "more-than-candidates"])
def test_exact_where_bf16_cannot_order_the_neighbours(variants, count_fallback):
    vectors, planted = below_bf16_resolution(variants)
    low = torch.from_numpy(vectors).to(torch.bfloat16)
    bf16_products = (low[planted] @ low[0]).float().numpy()
    fp32_products = vectors[planted] @ vectors[0]
    # Adversarial: bf16 ranks the variants differently from float32 (mostly as ties).
    assert len(np.unique(bf16_products)) < len(np.unique(fp32_products)) >= variants - 5
    assert not np.array_equal(np.argsort(-bf16_products, kind="stable"), np.argsort(-fp32_products, kind="stable"))

    reference = search_neighbors(vectors, k=8, radius=0.05, precision="fp32")
    found = search_neighbors(vectors, k=8, radius=0.05, chunk_rows=128, precision="bf16", group=4, margin=8)
    assert assert_same_answer(found, reference, vectors) == 0
    # Row 0's neighbours are the 8 variants with the largest float32 products, in that order.
    np.testing.assert_array_equal(found.topk_index[0], planted[np.argsort(-fp32_products, kind="stable")[:8]])
    if variants <= 8 + 8:  # all variants are candidates: re-ranking alone orders them
        assert 0 not in count_fallback
    else:  # more tied variants than candidates: row 0 cannot be certified, float32 decides
        assert 0 in count_fallback


@pytest.mark.parametrize("seed", [0, 1])
def test_error_bound_holds_for_every_pair(seed):
    vectors = np.concatenate(
        [clustered(rows=1200, dims=768, seed=seed), below_bf16_resolution(50, rows=200, dims=768, seed=seed)[0]]
    )
    bound = bf16_error_bound(vectors)
    # The a-priori bound for unit rows (2^-7 + 2^-16 from rounding, plus float32 sums) is looser.
    assert bound <= 2.0**-7 + 2.0**-16 + 5 * 768 * 2.0**-24
    low = torch.from_numpy(vectors).to(torch.bfloat16)
    bf16_products = (low @ low.T).float().numpy().astype(np.float64)
    fp32_products = (vectors @ vectors.T).astype(np.float64)
    allowed = bound + BF16_UNIT_ROUNDOFF * np.abs(bf16_products)
    error = np.abs(bf16_products - fp32_products)
    assert (error <= allowed).all()
    # Far below the bound in practice: the bound assumes worst-case alignment of rounding errors.
    assert (error / allowed).max() < 0.75
    assert (np.abs(bf16_products - fp32_products) - BF16_UNIT_ROUNDOFF * np.abs(bf16_products)).max() < 0.25 * bound


def test_precision_is_checked_and_the_chosen_precision_is_exact():
    vectors = clustered(rows=500, seed=3)
    with pytest.raises(ValueError, match="precision"):
        search_neighbors(vectors, k=K, radius=RADIUS, precision="fp16")
    chosen = choose_engine("cosine", len(vectors), "exact").engine.build(vectors)
    assert_same_answer(
        chosen.search(K, RADIUS), search_neighbors(vectors, k=K, radius=RADIUS, precision="fp32"), vectors
    )


def test_bf16_at_most_is_a_bf16_number_not_above_the_value():
    for value in (0.9, 0.8955, -0.3, -1e-3, 0.0, 1.0, 0.123456789):
        at_most = bf16._bf16_at_most(value)
        assert at_most <= value
        assert torch.tensor(at_most).to(torch.bfloat16).float().item() == at_most
        assert torch.tensor(at_most).to(torch.bfloat16).float().item() > value - abs(value) * 2.0**-7 - 1e-30


@pytest.mark.parametrize("slow_count", [1, 2])
def test_reduction_threads_run_the_chunks_between_probes_with_the_faster_count(slow_count):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        chooser = bf16.ReductionThreads(probe_every=4)
        used = []
        for _ in range(12):
            with chooser.timed(columns=10):
                used.append(torch.get_num_threads())
                time.sleep(0.05 if torch.get_num_threads() == slow_count else 0.0)
        assert torch.get_num_threads() == 2  # restored after each chunk
    finally:
        torch.set_num_threads(before)
    fast_count = 3 - slow_count
    probes = [1, 2]  # each count is timed on one chunk every 4
    assert used == (probes + [fast_count, fast_count]) * 3


def test_reduction_threads_fixed_count_is_always_used():
    chooser = bf16.ReductionThreads(fixed=1, probe_every=4)
    used = []
    for _ in range(6):
        with chooser.timed(columns=1):
            used.append(torch.get_num_threads())
    assert used == [1] * 6

"""core.search.cache: a search brought up to date incrementally equals a full search."""

import numpy as np
import pytest

from imgdedup_pipeline.core.search.cache import KeyedSearch, SearchCache, update_search
from imgdedup_pipeline.core.search.contents import find_content_neighbors
from imgdedup_pipeline.core.search.engines import ExactCosine, ExactHamming, search_neighbors
from imgdedup_pipeline.core.search.exact_hamming import search_hash_neighbors
from imgdedup_pipeline.core.search.result import l2_normalize
from imgdedup_pipeline.core.search.signals import HashSignal

K = 4
RADIUS = 0.1


def content_pool(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hex-like hashes and unit vectors with clusters, near duplicates and equal vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, size // 6), 16))
    vectors = centres[rng.integers(0, len(centres), size)] + 0.5 * rng.standard_normal((size, 16))
    near = rng.choice(size, size=(size // 5, 2), replace=False)
    vectors[near[:, 1]] = vectors[near[:, 0]] + 0.01 * rng.standard_normal((len(near), 16))
    hashes = np.array([f"{value:016x}" for value in rng.choice(2**62, size, replace=False)], dtype=object)
    return hashes, l2_normalize(vectors)


FINGERPRINT = f"cosine k={K} radius={RADIUS!r}"


def cosine_update(previous, hashes, vectors):
    return update_search(previous, hashes, ExactCosine().build(vectors), K, RADIUS)


def assert_same_search(incremental, full):
    np.testing.assert_allclose(incremental.topk_distance, full.topk_distance, atol=1e-6, rtol=0)
    assert set(zip(incremental.pair_left.tolist(), incremental.pair_right.tolist())) == set(
        zip(full.pair_left.tolist(), full.pair_right.tolist())
    )
    np.testing.assert_array_equal(incremental.pair_distance, full.pair_distance)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cosine_search_updated_over_arrivals_and_removals_equals_full_search(seed):
    pool_hashes, pool_vectors = content_pool(400, seed)
    rng = np.random.default_rng(seed + 100)
    present = set(rng.choice(len(pool_hashes), 300, replace=False).tolist())
    previous, modes = None, []
    for _ in range(6):
        rows = np.array(sorted(present, key=lambda i: pool_hashes[i]))
        hashes, vectors = pool_hashes[rows], pool_vectors[rows]
        previous, update = cosine_update(previous, hashes, vectors)
        modes.append(update.mode)
        full = search_neighbors(vectors, k=K, radius=RADIUS)
        assert_same_search(previous.search, full)
        # Neighbour sets, not only distances: random vectors have no ties.
        assert (previous.search.topk_index == full.topk_index).all()
        absent = sorted(set(range(len(pool_hashes))) - present)
        present |= set(rng.choice(absent, size=min(len(absent), 6), replace=False).tolist())
        present -= set(rng.choice(sorted(present), size=3, replace=False).tolist())
    assert modes[0] == "full" and set(modes[1:]) == {"incremental"}


def test_hash_search_updated_equals_full_search():
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**63, (200, 8), dtype=np.int64).view(np.uint64)
    pool[100:150] = pool[:50] ^ np.uint64(0b1011)  # close copies: 3 bits apart
    pool_hashes = np.array([f"{i:04d}" for i in range(200)], dtype=object)
    present, previous = set(range(0, 180)), None
    for step in range(4):
        rows = np.array(sorted(present))
        phashes = pool[rows]
        previous, update = update_search(previous, pool_hashes[rows], ExactHamming().build(phashes), K, 5)
        assert update.mode == ("full" if step == 0 else "incremental")
        full = search_hash_neighbors(phashes, k=K, radius_bits=5)
        # Integer distances tie, and a tie may be broken differently at the k-th place: compare
        # the distances and the pairs, which ties cannot change.
        assert_same_search(previous.search, full)
        present = (present - {step, 100 + step}) | {180 + step * 3, 181 + step * 3}


def test_new_settings_or_stale_vectors_force_a_full_search(tmp_path):
    hashes, vectors = content_pool(120, 9)
    search, _ = cosine_update(None, hashes, vectors)
    changed = update_search(search, hashes, ExactCosine().build(vectors), K, 2 * RADIUS)[1]
    assert (changed.mode, changed.reason) == ("full", "search settings changed")
    # The same hashes now carry other vectors (e.g. a table rebuilt under the same name): the
    # sampled re-check notices and the result is the full search's.
    other = l2_normalize(np.random.default_rng(10).standard_normal(vectors.shape))
    updated, update = cosine_update(
        KeyedSearch(hashes[:-1], search_neighbors(vectors[:-1], K, RADIUS), FINGERPRINT), hashes, other
    )
    assert update.mode == "full" and "no longer matches" in update.reason
    assert_same_search(updated.search, search_neighbors(other, k=K, radius=RADIUS))


def test_saved_search_loads_back_and_an_unreadable_file_is_no_cache(tmp_path):
    hashes, vectors = content_pool(50, 4)
    search, _ = cosine_update(None, hashes, vectors)
    SearchCache(tmp_path / "cache.npz").save(search)
    loaded = SearchCache(tmp_path / "cache.npz").load()
    assert loaded.fingerprint == FINGERPRINT and list(loaded.hashes) == list(hashes)
    assert_same_search(loaded.search, search.search)
    (tmp_path / "broken.npz").write_bytes(b"not a cache")
    warnings = []
    assert SearchCache(tmp_path / "broken.npz", warnings.append).load() is None
    assert len(warnings) == 1 and "broken.npz" in warnings[0] and not (tmp_path / "broken.npz").exists()
    assert SearchCache(tmp_path / "missing.npz").load() is None


def test_content_neighbors_from_a_previous_run_equal_a_fresh_search(tmp_path):
    pool_hashes, pool_vectors = content_pool(300, 7)
    rng = np.random.default_rng(8)
    phashes = {h: rng.integers(0, 2**63, 8, dtype=np.int64) for h in pool_hashes}
    for i in range(0, 60, 2):  # pHash-near pairs whose embeddings are far apart
        phashes[pool_hashes[i + 1]] = phashes[pool_hashes[i]] ^ np.int64(0b111)
    signal = HashSignal.from_mapping(phashes, threshold_bits=10)
    cache = SearchCache(tmp_path / "embedding.npz")
    first = find_content_neighbors(dict(zip(pool_hashes[:250], pool_vectors[:250])), RADIUS, signal, cache=cache)
    assert first.updates["embedding"].mode == "full"
    now = dict(zip(pool_hashes[1:280], pool_vectors[1:280]))  # 1 gone, 30 new
    updated = find_content_neighbors(now, RADIUS, signal, cache=cache)
    fresh = find_content_neighbors(now, RADIUS, signal)
    assert updated.updates["embedding"].mode == "incremental", updated.updates
    assert updated.updates["hash"].mode in (
        "full",
        "index",
    )  # the hash signal, within its cutoff only, is searched in full
    assert sorted(path.name for path in tmp_path.iterdir()) == ["embedding.npz"]
    np.testing.assert_array_equal(updated.identical_group, fresh.identical_group)
    np.testing.assert_allclose(updated.nearest_distance, fresh.nearest_distance, atol=1e-6, rtol=0)
    assert updated.pairs.equals(fresh.pairs)

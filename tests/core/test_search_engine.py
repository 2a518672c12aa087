"""Tests for the choice between the exact and the indexed neighbour search (core.search.choose), and
the indexed path of `find_content_neighbors` against the exact one on clustered data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import imgdedup_pipeline.core.search.choose as choose
from imgdedup_pipeline.core.search.cache import SearchCache
from imgdedup_pipeline.core.search.choose import INDEX_MIN_CONTENTS, MIN_INDEX_ROWS, choose_engine
from imgdedup_pipeline.core.search.contents import ContentVectors, find_content_neighbors
from imgdedup_pipeline.core.search.engines import ExactCosine, ExactHamming, IndexedCosine, IndexedHamming
from imgdedup_pipeline.core.search.ivf import faiss_module
from imgdedup_pipeline.core.search.protocol import NeighborEngine
from imgdedup_pipeline.core.search.signals import HashSignal

CONTENTS = 4_000  # above core.search.choose.MIN_INDEX_ROWS, so the index itself runs
DIM = 64
RADIUS = 0.1
FLOAT32_TOLERANCE = 1e-6


def test_auto_is_exact_below_the_threshold_and_the_index_above():
    assert choose_engine("cosine", INDEX_MIN_CONTENTS - 1, "auto", index_available=True).mode == "exact"
    choice = choose_engine("cosine", INDEX_MIN_CONTENTS, "auto", index_available=True)
    assert isinstance(choice.engine, IndexedCosine) and "auto" in choice.reason


def test_auto_without_faiss_stays_exact_and_says_how_to_get_the_index():
    choice = choose_engine("cosine", 10 * INDEX_MIN_CONTENTS, "auto", index_available=False)
    assert (
        isinstance(choice.engine, ExactCosine)
        and choice.mode == "exact"
        and "imgdedup-pipeline[scale]" in choice.reason
    )


def test_configured_engines_are_used_at_any_size():
    assert choose_engine("cosine", 10 * INDEX_MIN_CONTENTS, "exact", index_available=True).mode == "exact"
    assert choose_engine("cosine", 10, "index", index_available=True).mode == "index"


def test_index_without_faiss_is_an_error_naming_the_fix():
    with pytest.raises(ImportError, match=r"imgdedup-pipeline\[scale\]"):
        choose_engine("cosine", 10, "index", index_available=False)


def test_unknown_engine_is_an_error():
    with pytest.raises(ValueError, match="exact, index"):
        choose_engine("cosine", 10, "fastest", index_available=True)


def test_the_chooser_returns_an_engine_and_its_reason_for_each_signal_and_size():
    exact = choose_engine("cosine", 100, "exact")
    assert isinstance(exact.engine, ExactCosine) and (exact.reason, exact.mode) == ("configured", "exact")
    indexed = choose_engine("cosine", MIN_INDEX_ROWS, "index", index_available=True)
    assert isinstance(indexed.engine, IndexedCosine) and indexed.mode == "index"
    # Below MIN_INDEX_ROWS the index setting's answer is the exact search's (no index to train),
    # still reported, and never cached, as the index setting.
    small = choose_engine("cosine", MIN_INDEX_ROWS - 1, "index", index_available=True)
    assert isinstance(small.engine, ExactCosine) and small.mode == "index"
    assert (
        small.reason
        == f"configured; {MIN_INDEX_ROWS - 1} contents < {MIN_INDEX_ROWS}: searched exactly (no index to train)"
    )
    assert isinstance(choose_engine("hamming", 4_000, radius_bits=10).engine, IndexedHamming)
    few = choose_engine("hamming", 60, radius_bits=10)
    assert isinstance(few.engine, ExactHamming) and few.mode == "full" and "10 bits of 60 contents" in few.reason
    with pytest.raises(ValueError, match="unknown signal"):
        choose_engine("euclid", 10)


@pytest.mark.parametrize(
    "engine",
    [ExactCosine(), ExactCosine(precision="bf16"), IndexedCosine(), ExactHamming(), IndexedHamming()],
    ids=repr,
)
def test_every_engine_offers_the_protocol_and_needs_its_rows_first(engine):
    assert isinstance(engine, NeighborEngine)
    with pytest.raises(ValueError, match=r"build\(rows\)"):
        engine.distances_from(np.array([0]))


def test_content_vectors_from_a_mapping_are_sorted_and_normalised():
    vectors = ContentVectors.from_mapping({"b": np.array([3.0, 4.0]), "a": np.array([0.0, 2.0])})
    assert vectors.hashes.tolist() == ["a", "b"]
    np.testing.assert_allclose(vectors.matrix, [[0.0, 1.0], [0.6, 0.8]], atol=1e-7)
    assert vectors.matrix.dtype == np.float32
    with pytest.raises(ValueError, match="2 hashes for 1 vectors"):
        ContentVectors(np.array(["a", "b"], dtype=object), np.zeros((1, 2), np.float32))


def clustered_contents(seed: int = 0):
    """Clusters of ~20 contents, 2 % exact and 3 % near copies, and pHashes with planted near and
    rotated copies (the variant of a copy equals the original's identity hash)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CONTENTS // 20, DIM)).astype(np.float32)
    matrix = centres[rng.integers(0, len(centres), CONTENTS)] + 0.6 * rng.standard_normal((CONTENTS, DIM)).astype(
        np.float32
    )
    planted = rng.choice(CONTENTS, size=(int(CONTENTS * 0.05), 2), replace=False)
    matrix[planted[:80, 1]] = matrix[planted[:80, 0]]
    matrix[planted[80:, 1]] = matrix[planted[80:, 0]] + 0.01 * rng.standard_normal((len(planted) - 80, DIM)).astype(
        np.float32
    )
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    hashes = np.array([f"{i:08x}" for i in range(CONTENTS)], dtype=object)  # already sorted
    phashes = rng.integers(0, 2**63, size=(CONTENTS, 8), dtype=np.int64).view(np.uint64)
    flips = rng.choice(CONTENTS, size=(200, 2), replace=False)
    for (source, copy), bits in zip(flips, rng.integers(0, 14, len(flips))):
        flipped = np.uint64(sum(1 << int(b) for b in rng.choice(64, bits, replace=False)))
        if bits % 2:  # a rotated copy: one of its variants is the original's identity hash
            phashes[copy, 3] = phashes[source, 0] ^ flipped
        else:
            phashes[copy, 0] = phashes[source, 0] ^ flipped
    signal = HashSignal.from_mapping({h: phashes[i].view(np.int64) for i, h in enumerate(hashes)}, threshold_bits=10)
    return ContentVectors(hashes, matrix), signal


@pytest.fixture(scope="module")
def both_searches(tmp_path_factory):
    faiss_module()
    vectors, signal = clustered_contents()
    caches = tmp_path_factory.mktemp("caches")
    exact = find_content_neighbors(
        vectors, RADIUS, hash_signal=signal, engine="exact", cache=SearchCache(caches / "exact.npz")
    )
    indexed = find_content_neighbors(
        vectors, RADIUS, hash_signal=signal, engine="index", cache=SearchCache(caches / "index.npz")
    )
    return exact, indexed, caches


def test_index_engine_is_reported_and_keeps_no_cache(both_searches):
    exact, indexed, caches = both_searches
    assert {signal: update.mode for signal, update in indexed.updates.items()} == {
        "embedding": "index",
        "hash": "index",
    }
    assert not (caches / "index.npz").exists()  # nothing to reuse incrementally
    assert (caches / "exact.npz").is_file()  # the hash signal is searched in full every run


def test_index_finds_every_close_pair_with_its_exact_distance(both_searches):
    exact, indexed, _ = both_searches
    assert len(exact.pairs) > 150  # planted embedding and hash pairs
    merged = exact.pairs.merge(
        indexed.pairs, on=["left", "right"], how="outer", suffixes=("_exact", "_index"), indicator=True
    )
    assert (merged["_merge"] == "both").all()
    np.testing.assert_allclose(merged["distance_index"], merged["distance_exact"], atol=FLOAT32_TOLERANCE)
    np.testing.assert_array_equal(indexed.identical_group, exact.identical_group)


def test_index_scores_equal_exact_within_the_radius_and_never_come_closer(both_searches):
    exact, indexed, _ = both_searches
    close = exact.nearest_distance <= RADIUS
    assert close.sum() > 150
    np.testing.assert_allclose(indexed.nearest_distance[close], exact.nearest_distance[close], atol=FLOAT32_TOLERANCE)
    # Every distance the index reports is exact; it can only miss neighbours, so a nearest
    # distance is never smaller.
    assert (indexed.nearest_distance >= exact.nearest_distance - FLOAT32_TOLERANCE).all()
    far = ~close
    assert (indexed.nearest_distance[far] > RADIUS).all()  # labels cannot differ


def test_exact_is_the_default_of_the_function(monkeypatch):
    vectors, _ = clustered_contents()
    monkeypatch.setattr(choose, "INDEX_MIN_CONTENTS", 10)  # auto would take the index here
    assert find_content_neighbors(vectors, RADIUS).updates["embedding"].mode == "full"
    assert find_content_neighbors(vectors, RADIUS, engine="auto").updates["embedding"].mode == "index"


def test_the_hash_signal_takes_the_cheaper_of_its_two_exact_searches_whatever_the_engine(both_searches):
    """Only pairs within the cutoff count (SPEC.md), which the multi-index search finds exactly:
    `core.search.choose.choose_engine` picks it where it is cheaper, at any engine setting."""
    exact, indexed, _ = both_searches
    assert exact.updates["hash"].mode == indexed.updates["hash"].mode == "index"  # 4,000 contents
    vectors, signal = clustered_contents()
    few = ContentVectors(vectors.hashes[:60], vectors.matrix[:60])
    for engine in ("exact", "auto"):
        assert find_content_neighbors(few, RADIUS, hash_signal=signal, engine=engine).updates["hash"].mode == "full"


def test_hash_matches_are_the_same_through_either_search(monkeypatch):
    vectors, signal = clustered_contents()
    indexed = find_content_neighbors(vectors, RADIUS, hash_signal=signal)
    monkeypatch.setattr(choose, "plan_substrings", lambda *args, **kwargs: None)  # the exact Hamming search
    exact = find_content_neighbors(vectors, RADIUS, hash_signal=signal)
    assert (indexed.updates["hash"].mode, exact.updates["hash"].mode) == ("index", "full")
    pd.testing.assert_frame_equal(indexed.pairs, exact.pairs)
    np.testing.assert_array_equal(indexed.nearest_distance, exact.nearest_distance)

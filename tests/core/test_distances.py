"""Tests for core.distances: cosine distance, the uniqueness scale, invariant Hamming, top-k order.

Every expected value is written down from the definition, not recomputed with the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgdedup_pipeline.core.distances import (
    cosine_distance,
    identity_to_variant_bits,
    invariant_hamming,
    invariant_hamming_matrix,
    nearest_first,
    nearest_first_order,
    to_cosine_distance,
    to_uniqueness,
)


@pytest.mark.parametrize(
    ("dot", "expected"),
    [
        pytest.param(1.0, 0.0, id="same-direction"),
        pytest.param(0.0, 1.0, id="orthogonal"),
        pytest.param(-1.0, 2.0, id="opposite"),
        pytest.param(1.0000001, 0.0, id="rounding-above-one-clipped-to-zero"),
        pytest.param(-1.0000001, 2.0, id="rounding-below-minus-one-clipped-to-two"),
    ],
)
def test_cosine_distance_is_one_minus_dot_within_zero_and_two(dot, expected):
    assert cosine_distance(np.float64(dot)) == expected


@pytest.mark.parametrize("dtype", [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")])
def test_cosine_distance_keeps_the_dtype_of_the_products(dtype):
    assert cosine_distance(np.array([0.5, 0.25], dtype=dtype)).dtype == dtype


@pytest.mark.parametrize(
    ("distance", "uniqueness"),
    [
        pytest.param(0.0, 0.0, id="identical"),
        pytest.param(0.1, 0.05, id="near-duplicate-threshold"),
        pytest.param(2.0, 1.0, id="opposite"),
    ],
)
def test_uniqueness_is_half_the_cosine_distance_both_ways(distance, uniqueness):
    assert to_uniqueness(distance) == uniqueness
    assert to_cosine_distance(uniqueness) == distance


def test_scale_conversion_works_elementwise_on_arrays():
    np.testing.assert_array_equal(to_uniqueness(np.array([0.0, 1.0, np.inf])), [0.0, 0.5, np.inf])
    np.testing.assert_array_equal(to_cosine_distance(np.array([0.0, 0.5])), [0.0, 1.0])


# Hash sets of two variants (identity, one turned copy).
ZERO = np.uint64(0)
ONE_BIT, TWO_BITS, THREE_BITS = np.uint64(0b1), np.uint64(0b11), np.uint64(0b111)


@pytest.mark.parametrize(
    ("first", "second", "bits"),
    [
        pytest.param([ZERO, THREE_BITS], [ZERO, THREE_BITS], 0, id="same-image"),
        pytest.param([ZERO, ZERO], [THREE_BITS, THREE_BITS], 3, id="no-variant-closer"),
        pytest.param([ZERO, ZERO], [THREE_BITS, ONE_BIT], 1, id="identity-against-other-variant"),
        pytest.param([THREE_BITS, ONE_BIT], [ZERO, ZERO], 1, id="same-pair-other-way-round"),
        pytest.param([THREE_BITS, ZERO], [ZERO, TWO_BITS], 0, id="other-identity-against-own-variant"),
    ],
)
def test_invariant_hamming_takes_the_closest_variant_either_way(first, second, bits):
    first, second = np.array([first], np.uint64), np.array([second], np.uint64)
    assert invariant_hamming(first, second).tolist() == [bits]
    assert invariant_hamming(second, first).tolist() == [bits]


def test_identity_to_variant_bits_counts_against_each_variant_of_the_paired_row():
    hashes = np.array([[ZERO, THREE_BITS]], np.uint64)
    others = np.array([[ONE_BIT, TWO_BITS]], np.uint64)
    assert identity_to_variant_bits(hashes, others).tolist() == [[1, 2]]


def test_invariant_hamming_matrix_matches_the_pairwise_distance():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(7, 8), dtype=np.uint64)
    matrix = invariant_hamming_matrix(hashes[2:5], np.ascontiguousarray(hashes.T))
    assert matrix.dtype == np.float32 and matrix.shape == (3, 7)
    for query, row in enumerate(range(2, 5)):
        np.testing.assert_array_equal(matrix[query], invariant_hamming(hashes[row : row + 1], hashes))
    assert matrix[np.arange(3), np.arange(2, 5)].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("candidates", "candidate_distance", "k", "index", "distance"),
    [
        pytest.param([[2, 3, 1]], [[0.3, 0.1, 0.2]], None, [[3, 1, 2]], [[0.1, 0.2, 0.3]], id="ascending-distance"),
        pytest.param([[2, 3, 1]], [[0.1, 0.3, 0.1]], None, [[1, 2, 3]], [[0.1, 0.1, 0.3]], id="ties-by-smaller-index"),
        pytest.param([[2, 3, 1]], [[0.1, 0.3, 0.1]], 2, [[1, 2]], [[0.1, 0.1]], id="cut-to-k"),
        pytest.param([[2, 3, 1]], [[0.1, 0.3, 0.1]], 0, np.empty((1, 0)), np.empty((1, 0)), id="k-zero"),
        pytest.param(
            [[5, 4], [7, 6]],
            [[0.2, 0.1], [0.1, 0.1]],
            None,
            [[4, 5], [6, 7]],
            [[0.1, 0.2], [0.1, 0.1]],
            id="each-row-apart",
        ),
    ],
)
def test_nearest_first_orders_each_row_by_distance_then_index(candidates, candidate_distance, k, index, distance):
    found_index, found_distance = nearest_first(np.array(candidates), np.array(candidate_distance), k)
    np.testing.assert_array_equal(found_index, index)
    np.testing.assert_array_equal(found_distance, distance)


def test_nearest_first_order_returns_positions_and_allows_a_separate_tie_key():
    distance = np.array([[np.inf, 0.5, np.inf, 0.5]])
    tie_key = np.array([[9, 4, 2, 1]])
    assert nearest_first_order(distance, tie_key).tolist() == [[3, 1, 2, 0]]
    assert nearest_first_order(distance, tie_key, 1).tolist() == [[3]]

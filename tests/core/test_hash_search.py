"""core.search.exact_hamming's rotation/flip-invariant Hamming search against its definition, bit by bit."""

import numpy as np

from imgdedup_pipeline.core.search.exact_hamming import hamming_distances_from, search_hash_neighbors


def definition(hashes: np.ndarray, i: int, j: int) -> int:
    """min over variants of popcount(identity_i ^ variant_j), taken both ways."""
    forward = min(bin(int(hashes[i, 0]) ^ int(v)).count("1") for v in hashes[j])
    backward = min(bin(int(v) ^ int(hashes[j, 0])).count("1") for v in hashes[i])
    return min(forward, backward)


def planted_hashes(rows: int = 60, variants: int = 8, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, (rows, variants), dtype=np.int64).view(np.uint64)
    # Row 1's identity is row 0's fourth variant with 3 bits flipped; row 2 matches row 0 only
    # backwards (row 2's sixth variant is row 0's identity with 5 bits flipped).
    hashes[1, 0] = hashes[0, 3] ^ np.uint64(0b111)
    hashes[2, 5] = hashes[0, 0] ^ np.uint64(0b11111 << 40)
    return hashes


def test_distances_equal_the_definition_for_every_pair():
    hashes = planted_hashes()
    expected = np.array([[definition(hashes, i, j) for j in range(len(hashes))] for i in range(len(hashes))])
    for row in range(len(hashes)):
        assert np.array_equal(hamming_distances_from(hashes, row), expected[row].astype(np.float32))
    assert expected[0, 1] == expected[1, 0] == 3 and expected[0, 2] == expected[2, 0] == 5


def test_search_in_small_chunks_finds_the_same_top_k_and_pairs():
    hashes = planted_hashes()
    expected = np.array(
        [[definition(hashes, i, j) if i != j else 99 for j in range(len(hashes))] for i in range(len(hashes))]
    )
    # max_cells forces one row per chunk, so chunk boundaries are crossed everywhere.
    search = search_hash_neighbors(hashes, k=3, radius_bits=5, max_cells=len(hashes))
    assert np.array_equal(search.topk_distance[:, 0], expected.min(axis=1).astype(np.float32))
    pairs = set(zip(search.pair_left.tolist(), search.pair_right.tolist()))
    assert pairs == {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes)) if expected[i, j] <= 5}
    assert {(0, 1), (0, 2)} <= pairs

"""The distances the pipeline compares images by, and the two scales it reports them on.

- Cosine distance `d = 1 - cos` of L2-normalised embeddings, in [0, 2].
- Uniqueness scale (SPEC.md): `uniqueness = d / 2`, in [0, 1]; thresholds and labels live here.
- Rotation/flip-invariant Hamming distance (bits) between dihedral pHash sets: (V,) uint64 per
  image, the identity variant in column 0 and its rotations/flips after it.
- The same, with a turned variant counting only where the images' edge hashes agree after the
  turn (`confirmed_invariant_hamming`; `core.images.edge_hash_of_grid`).
- Top-k order: ascending distance, ties by the smaller index, as every search reports neighbours.

Nothing here imports Dagster.
"""

from __future__ import annotations

import numpy as np

from imgdedup_pipeline.core.images import dihedral_edge_hashes, edge_hash_words


def cosine_distance(dot):
    """Cosine distance from dot products of unit vectors: `1 - dot`, clipped to [0, 2] (rounding can
    push a product of unit vectors just past +-1). Keeps the input's dtype."""
    return np.clip(1.0 - dot, 0.0, 2.0)


def to_uniqueness(cosine_distance):
    """A cosine distance on the uniqueness scale (SPEC.md: uniqueness = cosine distance / 2)."""
    return cosine_distance / 2.0


def to_cosine_distance(uniqueness):
    """A uniqueness-scale value as a cosine distance (the inverse of `to_uniqueness`)."""
    return 2.0 * uniqueness


def identity_to_variant_bits(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(n, V) uint8: Hamming bits from each row's identity hash (column 0 of `hashes`) to every
    variant of the paired row of `others`; rows broadcast, so a single row may stand for all."""
    return np.bitwise_count(hashes[:, :1] ^ others)


def invariant_hamming(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Rotation/flip-invariant Hamming bits between paired rows of two (n, V) hash-set arrays: the
    smaller of one's identity hash against the other's variants and the reverse, so it is symmetric."""
    forward = identity_to_variant_bits(hashes, others).min(axis=1)
    backward = identity_to_variant_bits(others, hashes).min(axis=1)
    return np.minimum(forward, backward)


# A turned pHash match counts only where the two images' 256-bit edge hashes lie within this many
# bits after the turn. Measured on the shared and generated sets (BENCHMARKS.md, "Turned pHash
# matches"): true turned copies 0-16 bits, a turned copy with a watermark 32; opposite quarters of
# point-symmetric pictures 52-108.
EDGE_AGREEMENT_BITS = 40
_NOT_CONFIRMED_BITS = 255  # a variant whose edges do not agree: farther than any 64-bit distance
_CONFIRM_CHUNK_ROWS = 65_536  # rows whose turned edge hashes exist at once (~2.5 KiB a row)


def confirmed_invariant_hamming(
    hashes: np.ndarray,
    others: np.ndarray,
    edges: np.ndarray,
    other_edges: np.ndarray,
    edge_bits: int,
    within_bits: int = 64,
) -> np.ndarray:
    """`invariant_hamming` over the variants that the edge hashes confirm: the identity always,
    a rotation / flip only where the two images' edge hashes lie within `edge_bits` of each other
    after that same turn. (n,) int64 (at most 64: the identities always count).

    Edges are compared only where a turn within `within_bits` beats the identity: a caller that
    only asks whether a pair lies within a cutoff passes it, and a row whose answer is beyond it
    gets some value beyond it (the identity's bits) without its edge hashes ever being turned.

    Args:
        hashes, others: paired (n, V) uint64 dihedral pHash rows (rows broadcast).
        edges, other_edges: their (n, EDGE_HASH_WORDS) edge hashes (identity only; uint64 or
            int64 bit patterns, rows broadcast).
        edge_bits: the largest edge-hash distance that confirms a turned variant.
        within_bits: answers are exact up to this many bits.
    """
    hashes, others = np.broadcast_arrays(np.asarray(hashes), np.asarray(others))
    edges, other_edges = np.broadcast_arrays(edge_hash_words(edges), edge_hash_words(other_edges))
    forward = identity_to_variant_bits(hashes, others).astype(np.int64)
    backward = identity_to_variant_bits(others, hashes).astype(np.int64)
    bits = np.minimum(forward[:, 0], backward[:, 0])
    turned = np.minimum(forward[:, 1:].min(axis=1, initial=64), backward[:, 1:].min(axis=1, initial=64))
    to_confirm = np.flatnonzero((turned < bits) & (turned <= within_bits))
    for start in range(0, len(to_confirm), _CONFIRM_CHUNK_ROWS):
        rows = to_confirm[start : start + _CONFIRM_CHUNK_ROWS]
        for variant_bits, my_edges, their_edges in ((forward, edges, other_edges), (backward, other_edges, edges)):
            turned_edges = dihedral_edge_hashes(their_edges[rows])[:, : variant_bits.shape[1]]
            agree = np.bitwise_count(my_edges[rows, None, :] ^ turned_edges).sum(axis=2, dtype=np.int64) <= edge_bits
            agree[:, 0] = True
            confirmed = np.where(agree, variant_bits[rows], _NOT_CONFIRMED_BITS).min(axis=1)
            bits[rows] = np.minimum(bits[rows], confirmed)
    return bits


def invariant_hamming_matrix(queries: np.ndarray, by_variant: np.ndarray) -> np.ndarray:
    """(Q, M) float32 `invariant_hamming` bits from each (Q, V) query row to every one of M rows,
    given as `by_variant` = their (V, M) transpose (contiguous; callers reuse it across blocks).

    One 2-D pass per variant into preallocated buffers rather than reducing a (Q, M, V) array over
    its short last axis, which is several times slower.
    """
    identity = by_variant[0]
    bits = np.bitwise_count(queries[:, :1] ^ identity)
    xor = np.empty(bits.shape, np.uint64)
    count = np.empty(bits.shape, np.uint8)
    for variant in range(1, queries.shape[1]):
        for mine, theirs in ((queries[:, :1], by_variant[variant]), (queries[:, variant : variant + 1], identity)):
            np.bitwise_xor(mine, theirs, out=xor)
            np.minimum(bits, np.bitwise_count(xor, out=count), out=bits)
    return bits.astype(np.float32)


def nearest_first_order(distance: np.ndarray, index: np.ndarray, k: int | None = None) -> np.ndarray:
    """(rows, <=k) positions that order each row of `distance` ascending, ties by `index`, cut to k."""
    return np.lexsort((index, distance), axis=1)[:, :k]


def nearest_first(index: np.ndarray, distance: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (index, distance) candidates ordered as `nearest_first_order`, cut to k."""
    order = nearest_first_order(distance, index, k)
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(distance, order, axis=1)

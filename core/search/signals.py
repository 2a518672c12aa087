"""The perceptual-hash signal beside the embedding (SPEC.md, "several signals"): which pairs it
vouches for and at what distance on the cosine scale. Fused with the embedding and the turned-copy
signal (`core.rotated_copies`) by `core.search.contents.find_content_neighbors`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from imgdedup_pipeline.core.images import DIHEDRAL_TRANSPOSES, informative_phashes
from imgdedup_pipeline.core.search.batches import release_free_heap
from imgdedup_pipeline.core.search.cache import SearchUpdate
from imgdedup_pipeline.core.search.choose import EngineChoice, choose_engine
from imgdedup_pipeline.core.search.engines import IndexedHamming
from imgdedup_pipeline.core.search.exact_hamming import hamming_distances_from, topk_from_pairs
from imgdedup_pipeline.core.search.result import NeighborSearch, scaled

NEIGHBORS_PER_ROW = 16


@dataclass(frozen=True)
class HashSignal:
    """A perceptual-hash signal that vouches for matches beside the embedding (SPEC.md, "several
    signals").

    It counts for a pair only where its distance is within `threshold_bits` and both hashes are
    informative (`core.images.informative_phashes`: never on flat images); there the bits are
    mapped linearly onto the cosine scale so that `threshold_bits` lands on the near-duplicate
    radius. Beyond that it does not count at all, so a unique image's score is its embedding's.

    Attributes:
        hashes_by_content: pixel hash -> (V,) uint64 hashes, identity variant first.
        threshold_bits: the signal's cutoff, the Hamming distance that counts as exactly at the
            near-duplicate threshold.
    """

    hashes_by_content: dict
    threshold_bits: int = 10

    def matrix(self, pixel_hashes) -> np.ndarray:
        """(M, V) uint64 hashes of the given contents, in that order (stored as signed int64)."""
        pixel_hashes = list(pixel_hashes)
        if not pixel_hashes:
            return np.empty((0, len(DIHEDRAL_TRANSPOSES)), dtype=np.uint64)
        first = np.asarray(self.hashes_by_content[pixel_hashes[0]]).astype(np.int64)
        # Filled row by row: a list of per-content arrays to stack would double the matrix and
        # add ~100 bytes of array header per content.
        matrix = np.empty((len(pixel_hashes), *first.shape), dtype=np.int64)
        for row, pixel_hash in enumerate(pixel_hashes):
            hashes = np.asarray(self.hashes_by_content[pixel_hash]).astype(np.int64)
            if hashes.shape != first.shape:  # what np.stack refused; assignment would broadcast
                raise ValueError(
                    f"content {pixel_hash[:12]} has pHashes of shape {hashes.shape}, others {first.shape}; "
                    "recompute the catalog's pHashes"
                )
            matrix[row] = hashes
        return matrix.view(np.uint64)

    def bits_to_cosine(self, near_duplicate_cosine_distance: float) -> float:
        """Linear map of bits onto the cosine scale: `threshold_bits` lands on the threshold."""
        return near_duplicate_cosine_distance / self.threshold_bits

    def vouched_matches(
        self, phashes: np.ndarray, radius: float, k: int = NEIGHBORS_PER_ROW
    ) -> tuple[NeighborSearch, SearchUpdate]:
        """The pairs this signal vouches for, on the cosine scale, and how they were searched.

        Args:
            phashes: (M, V) uint64, `matrix` of the contents.
            radius: cosine distance `threshold_bits` maps to (2 x the near-duplicate threshold).
            k: matches kept per row.

        Returns:
            (search, update): the pairs of informative rows within `threshold_bits`, each row's up
            to k nearest among them (-1 / inf pads; rows without information have none), all
            distances mapped onto the cosine scale; update says whether the multi-index or the
            exact Hamming search ran (`core.search.choose.choose_engine`: equal answers).
        """
        rows = np.flatnonzero(informative_phashes(phashes))
        found, choice = pairs_within(phashes[rows], self.threshold_bits)
        update = SearchUpdate(choice.mode, len(rows), choice.reason)
        # `rows` ascends, so mapped pairs keep left < right and their (left, right) order, and the
        # top-k lists built over all contents equal those of the informative rows, mapped (without
        # a second (M, k) pair of arrays to map from).
        left, right = rows[found.pair_left], rows[found.pair_right]
        index, distance = topk_from_pairs(len(phashes), max(0, min(k, len(rows) - 1)), left, right, found.pair_distance)
        matches = NeighborSearch(index, distance, left, right, found.pair_distance)
        return scaled(matches, self.bits_to_cosine(radius)), update

    def vouched_distances_from(
        self, phashes: np.ndarray, informative: np.ndarray, row: int, radius: float
    ) -> np.ndarray:
        """(M,) float32 cosine-scale distances this signal gives from one row to every row: the
        mapped bits where within `threshold_bits` and both rows are informative, else +inf."""
        bits = hamming_distances_from(phashes, row)
        vouched = (bits <= self.threshold_bits) & informative & informative[row]
        return np.where(vouched, bits * np.float32(self.bits_to_cosine(radius)), np.float32(np.inf)).astype(np.float32)


def hash_pairs_within(
    hashes: np.ndarray, k: int, threshold_bits: int, workers: int | None = None
) -> tuple[NeighborSearch, EngineChoice]:
    """The pairs within `threshold_bits` (bits) and each row's up to k nearest among them, through
    the Hamming engine the chooser takes for this size, and that choice. Both engines find the
    same pairs; the top-k lists are built from the pairs (ties by index), so they agree too.

    Args:
        hashes: (M, V) uint64, identity variant first.
        k: matches kept per row (clipped to M - 1).
        threshold_bits: the cutoff.
        workers: threads of the multi-index search (None: the CPU count, capped).
    """
    found, choice = pairs_within(hashes, threshold_bits, workers)
    index, distance = topk_from_pairs(
        len(hashes), max(0, min(k, len(hashes) - 1)), found.pair_left, found.pair_right, found.pair_distance
    )
    return NeighborSearch(index, distance, found.pair_left, found.pair_right, found.pair_distance), choice


def pairs_within(
    hashes: np.ndarray, threshold_bits: int, workers: int | None = None
) -> tuple[NeighborSearch, EngineChoice]:
    """The pairs within `threshold_bits` (no top-k lists), through the Hamming engine the chooser
    takes for this size, and that choice; arguments as `hash_pairs_within`."""
    choice = choose_engine("hamming", len(hashes), variants=hashes.shape[1], radius_bits=threshold_bits)
    engine = (
        dataclasses.replace(choice.engine, workers=workers)
        if isinstance(choice.engine, IndexedHamming)
        else choice.engine
    )
    found = engine.build(hashes).search(0, threshold_bits)
    # The multi-index search's worker threads leave their freed tables in the C heap's per-thread
    # arenas (~0.3 GiB at 1M contents); handed back before the top-k lists are built.
    release_free_heap()
    return found, choice

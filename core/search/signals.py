"""The perceptual-hash signal beside the embedding (SPEC.md, "several signals"): which pairs it
vouches for and at what distance on the cosine scale. Fused with the embedding and the turned-copy
signal (`core.rotated_copies`) by `core.search.contents.find_content_neighbors`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.distances import EDGE_AGREEMENT_BITS, confirmed_invariant_hamming
from imgdedup_pipeline.core.images import DIHEDRAL_TRANSPOSES, EDGE_HASH_WORDS, informative_phashes
from imgdedup_pipeline.core.search.batches import release_free_heap
from imgdedup_pipeline.core.search.cache import SearchUpdate
from imgdedup_pipeline.core.search.choose import EngineChoice, choose_engine
from imgdedup_pipeline.core.search.engines import IndexedHamming
from imgdedup_pipeline.core.search.exact_hamming import PairLists, hamming_distances_from, topk_from_pairs
from imgdedup_pipeline.core.search.result import NeighborSearch

NEIGHBORS_PER_ROW = 16


@dataclass(frozen=True)
class HashSignal:
    """A perceptual-hash signal that vouches for matches beside the embedding (SPEC.md, "several
    signals").

    It counts for a pair only where its distance is within `threshold_bits` and both hashes are
    informative (`core.images.informative_phashes`: never on flat images); there the bits are
    mapped linearly onto the cosine scale so that `threshold_bits` lands on the near-duplicate
    radius. Beyond that it does not count at all, so a unique image's score is its embedding's.
    A rotated or flipped variant counts only where the images' edges line up after that turn
    (`core.distances.confirmed_invariant_hamming`): pHash's low frequencies alone take opposite
    quarters of a point-symmetric picture for a turned copy.

    Attributes:
        pixel_hashes: (M,) the contents' pixel hashes, sorted ascending, unique.
        hashes: (M, V) uint64, row i the hashes of pixel_hashes[i], identity variant first. One
            matrix rather than an array per content: at 1M contents a dict of arrays costs
            ~150 MiB more (BENCHMARKS.md, "Memory at 1M").
        edge_hashes: (M, EDGE_HASH_WORDS) uint64 edge hashes (`core.images.edge_hash_of_grid`),
            row i of pixel_hashes[i].
        threshold_bits: the signal's cutoff, the Hamming distance that counts as exactly at the
            near-duplicate threshold.
        edge_agreement_bits: the edge-hash distance within which a turned variant counts.
    """

    pixel_hashes: np.ndarray
    hashes: np.ndarray
    edge_hashes: np.ndarray
    threshold_bits: int = 10
    edge_agreement_bits: int = EDGE_AGREEMENT_BITS

    def __post_init__(self):
        if not len(self.pixel_hashes) == len(self.hashes) == len(self.edge_hashes):
            raise ValueError(
                f"{len(self.pixel_hashes)} pixel hashes for {len(self.hashes)} rows of pHashes "
                f"and {len(self.edge_hashes)} edge hashes"
            )
        if (
            self.hashes.dtype != np.uint64
            or self.hashes.ndim != 2
            or self.edge_hashes.dtype != np.uint64
            or self.edge_hashes.shape[1:] != (EDGE_HASH_WORDS,)
        ):
            raise ValueError(
                f"pHashes must be an (M, V) uint64 matrix and edge hashes (M, {EDGE_HASH_WORDS}) uint64, not "
                f"{self.hashes.dtype} {self.hashes.shape} and {self.edge_hashes.dtype} {self.edge_hashes.shape}"
            )
        if len(self.pixel_hashes) > 1 and not (self.pixel_hashes[:-1] < self.pixel_hashes[1:]).all():
            raise ValueError("pixel hashes must be sorted ascending and unique (rows are looked up by search)")

    @classmethod
    def from_mapping(
        cls,
        hashes_by_content: Mapping[str, np.ndarray] | pd.Series,
        threshold_bits: int = 10,
        edge_hashes_by_content: Mapping[str, np.ndarray] | pd.Series | None = None,
    ) -> HashSignal:
        """From pixel hash -> (V,) hashes (uint64, or int64 bit patterns as the catalog stores
        them) and pixel hash -> (EDGE_HASH_WORDS,) edge hash words (the same). Without edge hashes
        every content gets zeros, so every turned variant counts (synthetic hashes that stand for no
        picture)."""
        if isinstance(hashes_by_content, pd.Series):  # a dict looks keys up ~10x faster
            hashes_by_content = hashes_by_content.to_dict()
        if isinstance(edge_hashes_by_content, pd.Series):
            edge_hashes_by_content = edge_hashes_by_content.to_dict()
        pixel_hashes = np.array(sorted(hashes_by_content.keys()), dtype=object)
        variants = (
            len(np.asarray(hashes_by_content[pixel_hashes[0]])) if len(pixel_hashes) else len(DIHEDRAL_TRANSPOSES)
        )
        matrix = _stacked_rows(hashes_by_content, pixel_hashes, variants, "pHashes")
        if edge_hashes_by_content is None:
            edges = np.zeros((len(pixel_hashes), EDGE_HASH_WORDS), dtype=np.int64)
        else:
            edges = _stacked_rows(edge_hashes_by_content, pixel_hashes, EDGE_HASH_WORDS, "edge hash")
        return cls(pixel_hashes, matrix.view(np.uint64), edges.view(np.uint64), threshold_bits)

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame, threshold_bits: int = 10) -> HashSignal:
        """From catalog rows (`pixel_hash`, `phashes`, `edge_hash`), one per distinct content."""
        per_content = catalog.drop_duplicates("pixel_hash").set_index("pixel_hash")
        return cls.from_mapping(per_content["phashes"], threshold_bits, per_content["edge_hash"])

    def rows_of(self, pixel_hashes) -> np.ndarray | slice:
        """Where the given contents' rows are: all rows when they are the signal's own contents in
        its order (the search's case, no copy), else their positions."""
        pixel_hashes = np.asarray(pixel_hashes, dtype=object)
        if len(pixel_hashes) == len(self.pixel_hashes) and np.array_equal(pixel_hashes, self.pixel_hashes):
            return slice(None)
        rows = np.searchsorted(self.pixel_hashes, pixel_hashes)
        known = rows < len(self.pixel_hashes)
        known[known] = self.pixel_hashes[rows[known]] == pixel_hashes[known]
        if not known.all():
            raise KeyError(f"no pHashes for content {pixel_hashes[~known][0]}")
        return rows

    def matrix(self, pixel_hashes) -> np.ndarray:
        """(M, V) uint64 pHashes of the given contents, in that order."""
        return self.hashes[self.rows_of(pixel_hashes)]

    def edges(self, pixel_hashes) -> np.ndarray:
        """(M, EDGE_HASH_WORDS) uint64 edge hashes of the given contents, in that order."""
        return self.edge_hashes[self.rows_of(pixel_hashes)]

    def bits_to_cosine(self, near_duplicate_cosine_distance: float) -> float:
        """Linear map of bits onto the cosine scale: `threshold_bits` lands on the threshold."""
        return near_duplicate_cosine_distance / self.threshold_bits

    def confirmed_bits(self, phashes: np.ndarray, edges: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(P,) int64 pHash bits of the row pairs over the variants the edges confirm
        (`core.distances.confirmed_invariant_hamming`), exact up to `threshold_bits`."""
        return confirmed_invariant_hamming(
            phashes[left], phashes[right], edges[left], edges[right], self.edge_agreement_bits, self.threshold_bits
        )

    def vouched_pairs(self, phashes: np.ndarray, edges: np.ndarray) -> tuple[VouchedPairs, SearchUpdate]:
        """The pairs this signal vouches for, in bits, and how they were searched.

        Args:
            phashes: (M, V) uint64, `matrix` of the contents.
            edges: (M, EDGE_HASH_WORDS) uint64, `edges` of the contents.

        Returns:
            (pairs, update): the pairs of informative rows within `threshold_bits` over the
            confirmed variants; update says whether the multi-index or the exact Hamming search ran
            (`core.search.choose.choose_engine`: equal answers).
        """
        rows = np.flatnonzero(informative_phashes(phashes))
        found, choice = pairs_within(phashes[rows], self.threshold_bits)
        update = SearchUpdate(choice.mode, len(rows), choice.reason)
        # `rows` ascends, so mapped pairs keep left < right and their (left, right) order.
        left, right = rows[found.pair_left], rows[found.pair_right]
        # The search found every pair within the cutoff over all variants; a pair whose close
        # variants are turns the edges do not confirm is farther, or out.
        bits = self.confirmed_bits(phashes, edges, left, right)
        vouched = bits <= self.threshold_bits
        return VouchedPairs(len(phashes), len(rows), left[vouched], right[vouched], bits[vouched]), update

    def vouched_matches(
        self, phashes: np.ndarray, edges: np.ndarray, radius: float, k: int = NEIGHBORS_PER_ROW
    ) -> tuple[NeighborSearch, SearchUpdate]:
        """`vouched_pairs` with each row's up to k nearest among them (-1 / inf pads; rows without
        information have none), all distances mapped onto the cosine scale, where `radius` (2 x
        the near-duplicate threshold) is what `threshold_bits` maps to."""
        pairs, update = self.vouched_pairs(phashes, edges)
        return pairs.matches(k, self.bits_to_cosine(radius)), update

    def vouched_distances_from(
        self, phashes: np.ndarray, edges: np.ndarray, informative: np.ndarray, row: int, radius: float
    ) -> np.ndarray:
        """(M,) float32 cosine-scale distances this signal gives from one row to every row: the
        mapped confirmed bits where within `threshold_bits` and both rows are informative, else +inf."""
        candidates = np.flatnonzero(
            (hamming_distances_from(phashes, row) <= self.threshold_bits) & informative & informative[row]
        )
        bits = self.confirmed_bits(phashes, edges, np.full(len(candidates), row), candidates)
        distances = np.full(len(phashes), np.inf, dtype=np.float32)
        vouched = bits <= self.threshold_bits
        distances[candidates[vouched]] = bits[vouched] * np.float32(self.bits_to_cosine(radius))
        return distances


def _stacked_rows(values_by_content: Mapping, pixel_hashes: np.ndarray, width: int, what: str) -> np.ndarray:
    """(M, width) int64 rows of the contents' values (uint64 or int64 bit patterns), filled row by
    row: a list of per-content arrays to stack would double the matrix."""
    rows = np.empty((len(pixel_hashes), width), dtype=np.int64)
    for row, pixel_hash in enumerate(pixel_hashes):
        values = np.asarray(values_by_content[pixel_hash]).astype(np.int64)
        if values.shape != (width,):  # what np.stack refused; assignment would broadcast
            raise ValueError(
                f"content {pixel_hash[:12]} has {what} of shape {values.shape}, others {(width,)}; recompute the catalog"
            )
        rows[row] = values
    return rows


@dataclass(frozen=True)
class VouchedPairs:
    """Pairs a hash signal vouches for, in bits (pairs only: (M, k) lists are built when merged).

    Attributes:
        rows: M, the contents searched.
        informative_rows: how many of them have an informative hash (only those have pairs).
        left, right: (P,) int64 rows, left < right, sorted by (left, right).
        bits: (P,) int64 confirmed Hamming distances.
    """

    rows: int
    informative_rows: int
    left: np.ndarray
    right: np.ndarray
    bits: np.ndarray

    def matches(self, k: int, bits_to_cosine: float) -> NeighborSearch:
        """The pairs with each row's up to k nearest among them (ties by index), on the cosine scale."""
        lists = self.lists(k, bits_to_cosine)
        index, distance = lists.lists(slice(None))
        return NeighborSearch(index, distance, lists.pair_left, lists.pair_right, lists.pair_distance)

    def lists(self, k: int, bits_to_cosine: float) -> ScaledPairLists:
        """As `matches`, with the top-k lists read per row block when merged
        (`core.search.result.merge_searches`): no (M, k) arrays of them (~190 MiB at 1M contents)."""
        width = max(0, min(k, self.informative_rows - 1))
        # Over all M rows from the pairs: the same lists as the informative rows' own, mapped.
        return ScaledPairLists(
            PairLists(self.rows, self.left, self.right, self.bits),
            width,
            np.float32(bits_to_cosine),
            self.left,
            self.right,
            self.bits.astype(np.float32) * np.float32(bits_to_cosine),
        )


@dataclass(frozen=True)
class ScaledPairLists:
    """`VouchedPairs` on the cosine scale, its top-k lists built for one row block at a time
    (`core.search.result.RowBlockLists`)."""

    pair_lists: PairLists
    width: int
    scale: np.float32
    pair_left: np.ndarray
    pair_right: np.ndarray
    pair_distance: np.ndarray

    def lists(self, block: slice) -> tuple[np.ndarray, np.ndarray]:
        first, stop, _ = block.indices(self.pair_lists.rows)
        index, bits = self.pair_lists.topk(self.width, first, max(first, stop))
        bits *= self.scale  # in place: the same float32 products as scaling the whole lists
        return index, bits


def hash_pairs_within(
    hashes: np.ndarray, k: int, threshold_bits: int, workers: int | None = None
) -> tuple[NeighborSearch, EngineChoice]:
    """The pairs within `threshold_bits` (bits, over every variant: no edge confirmation, see
    `HashSignal.vouched_pairs`) and each row's up to k nearest among them, through the Hamming
    engine the chooser takes for this size, and that choice. Both engines find the
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

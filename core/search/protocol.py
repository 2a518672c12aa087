"""The one interface every neighbour-search engine offers (STYLE.md section 10).

An engine is an immutable value: configured first (`ExactCosine(precision="bf16")`), then
`build(rows)` returns a copy that holds the rows to search. Callers never know which engine runs:
`core.search.choose.choose_engine` picks one, `core.search.cache.SearchCache` wraps any of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from imgdedup_pipeline.core.search.result import NeighborSearch


@runtime_checkable
class NeighborEngine(Protocol):
    """Search among M rows: k nearest, pairs within a radius, distances from given rows.

    Attributes:
        signal: what the distance measures, part of a cached search's fingerprint: `cosine`
            (cosine distance of L2-normalised rows, in [0, 2]) or `hamming` (rotation/flip-
            invariant bits between perceptual hashes). Engines of one signal give equal answers
            (the indexed cosine engine: nearly every neighbour, every distance exact).
    """

    @property
    def signal(self) -> str: ...

    def build(self, rows: np.ndarray) -> NeighborEngine:
        """A copy of this engine over `rows`: (M, D) float32 L2-normalised vectors (cosine) or
        (M, V) uint64 hashes, identity variant first (hamming). Does not modify `rows`."""
        ...

    def search(self, k: int, radius: float) -> NeighborSearch:
        """Each row's k nearest other rows (clipped to M - 1, ascending, -1 / +inf padded; an
        engine that indexes within the radius lists only rows within it) and every pair
        (left < right) within `radius`, sorted by (left, right)."""
        ...

    def distances_from(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), M) float32 distances from the given rows to every row (a row's own included)."""
        ...

    def pair_distances(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(P,) float32 distances of the pairs (left[i], right[i]), computed as `search` reports pairs."""
        ...

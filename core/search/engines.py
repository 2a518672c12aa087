"""The engines behind `core.search.protocol.NeighborEngine`: exact and indexed cosine search over
embeddings, exact and indexed (multi-index hashing) Hamming search over perceptual hashes.

Each is a frozen dataclass: its options first, then `build(rows)` returns a copy holding the rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from imgdedup_pipeline.core.distances import invariant_hamming
from imgdedup_pipeline.core.search.exact_cosine import (
    DEFAULT_CHUNK_ROWS,
    MAX_BLOCK_CELLS,
    cosine_distances_from,
    cosine_pair_distances,
    search_neighbors_fp32,
)
from imgdedup_pipeline.core.search.exact_hamming import as_hash_matrix, hamming_distances_of_rows, search_hash_neighbors
from imgdedup_pipeline.core.search.result import NeighborSearch

PRECISIONS = ("fp32", "bf16")


def search_neighbors(
    vectors: np.ndarray,
    k: int,
    radius: float,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    precision: str = "fp32",
    block_cells: int = MAX_BLOCK_CELLS,
    **bf16_options,
) -> NeighborSearch:
    """Each row's k nearest other rows and every pair within `radius` (cosine distance), exactly.

    Both precisions return the float32 answer. The bf16 path multiplies in bf16 only to choose
    candidates, under a proven error bound (`core.search.bf16`); every distance it returns is a
    float32 dot product, and rows it cannot certify are recomputed in float32.

    Args:
        vectors: (M, D) L2-normalised float32 rows.
        k: neighbours kept per row (clipped to M - 1).
        radius: pairs with `1 - cos <= radius` are returned (cosine distance, in [0, 2]).
        chunk_rows: rows multiplied at once (at most what fits `block_cells`).
        precision: "fp32" (float32 products everywhere) or "bf16" (bf16 candidates, float32
            re-rank: faster only where the CPU multiplies bf16 natively, see
            `core.search.choose.choose_engine`).
        block_cells: the similarity block held at once, in float32 cells (256 MiB by default).
        **bf16_options: `margin` (candidates kept per row beyond k) and `group` (entries per group
            of the group-max prefilter) of the bf16 path.

    Returns:
        NeighborSearch with distances clipped to [0, 2]; top-k ascending by distance, ties by
        index; pairs sorted by (left, right).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if precision == "bf16":
        from imgdedup_pipeline.core.search.bf16 import BF16_GROUP, BF16_MARGIN, search_neighbors_bf16

        options = {"margin": BF16_MARGIN, "group": BF16_GROUP, **bf16_options}
        return search_neighbors_bf16(vectors, k, radius, chunk_rows, options["margin"], options["group"], block_cells)
    return search_neighbors_fp32(vectors, k, radius, chunk_rows, block_cells)


@dataclass(frozen=True)
class _Rows:
    """The rows an engine was built over (None until `build`)."""

    rows: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def _built(self) -> np.ndarray:
        if self.rows is None:
            raise ValueError(f"{type(self).__name__} has no rows yet: call build(rows) first")
        return self.rows


@dataclass(frozen=True)
class _CosineRows(_Rows):
    """What both cosine engines share: (M, D) float32 L2-normalised rows, their distances."""

    signal: str = dataclasses.field(default="cosine", init=False)

    def build(self, rows: np.ndarray):
        return dataclasses.replace(self, rows=np.ascontiguousarray(rows, dtype=np.float32))

    def distances_from(self, rows: np.ndarray) -> np.ndarray:
        return cosine_distances_from(self._built(), rows)

    def pair_distances(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return cosine_pair_distances(self._built(), left, right)


@dataclass(frozen=True)
class ExactCosine(_CosineRows):
    """Exact cosine search streamed in row chunks (`search_neighbors`); `precision="bf16"` is the
    bf16 candidate filter, same answer."""

    precision: str = "fp32"

    def search(self, k: int, radius: float) -> NeighborSearch:
        return search_neighbors(self._built(), k=k, radius=radius, precision=self.precision)


@dataclass(frozen=True)
class IndexedCosine(_CosineRows):
    """faiss IVF index, exact re-rank and graph refinement (`core.search.ivf`): nearly every
    neighbour, every distance exact. Needs faiss-cpu."""

    def search(self, k: int, radius: float) -> NeighborSearch:
        from imgdedup_pipeline.core.search.ivf import search_neighbors_ivf

        return search_neighbors_ivf(self._built(), k=k, radius=radius)


@dataclass(frozen=True)
class _HammingRows(_Rows):
    """What both Hamming engines share: (M, V) uint64 hashes, their invariant distances in bits."""

    signal: str = dataclasses.field(default="hamming", init=False)

    def build(self, rows: np.ndarray):
        return dataclasses.replace(self, rows=as_hash_matrix(rows))

    def distances_from(self, rows: np.ndarray) -> np.ndarray:
        return hamming_distances_of_rows(self._built(), rows)

    def pair_distances(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        hashes = self._built()
        return invariant_hamming(hashes[left], hashes[right]).astype(np.float32)


@dataclass(frozen=True)
class ExactHamming(_HammingRows):
    """Every row against every row (`core.search.exact_hamming.search_hash_neighbors`)."""

    def search(self, k: int, radius: float) -> NeighborSearch:
        return search_hash_neighbors(self._built(), k, radius)


@dataclass(frozen=True)
class IndexedHamming(_HammingRows):
    """Multi-index hashing (`core.search.mih`): the exact search's pairs, sub-quadratic; its top-k
    lists hold only rows within the radius (the index knows no others).

    Attributes:
        plan: the substrings (`core.search.mih_plan.plan_substrings`); None: planned for the rows.
        workers: threads probing the tables (None: the CPU count, capped).
    """

    plan: tuple | None = None
    workers: int | None = None

    def search(self, k: int, radius: float) -> NeighborSearch:
        from imgdedup_pipeline.core.search.mih import search_hash_neighbors_within

        return search_hash_neighbors_within(self._built(), k, radius, plan=self.plan, workers=self.workers)

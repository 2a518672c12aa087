"""Incremental neighbour search: keep a search's results by content hash between runs, and on the
next run search only the rows that changed, with the same result as a full search.

A row's top-k among the contents still present is known without searching it again unless one of
its k neighbours was removed. So only *new* rows and rows that lost a neighbour ("dirty") are
searched against all rows; every other row merges its old top-k with its distances to the new rows
(a column of the new rows' block). Close pairs are the old pairs between contents still present,
plus the new rows' pairs. Cost per run: O(changed x N) instead of O(N x N).

A cached search is only reused when its fingerprint (what the distances depend on) matches, and a
sample of reused rows is searched again and compared, so a stale cache falls back to a full search
instead of giving wrong answers.

`SearchCache` wraps any engine (`core.search.protocol.NeighborEngine`): it loads the last run's
search from its file, brings it up to date with the engine's `distances_from` / `pair_distances`
and saves it back. Nothing of it rides on the scoring result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgdedup_pipeline.core.atomic_write import write_atomically
from imgdedup_pipeline.core.disposable_cache import read_or_discard
from imgdedup_pipeline.core.distances import nearest_first, nearest_first_order
from imgdedup_pipeline.core.search.protocol import NeighborEngine
from imgdedup_pipeline.core.search.result import NeighborSearch

logger = logging.getLogger(__name__)

# Above this fraction of changed rows a full search is about as fast, and simpler.
MAX_CHANGED_FRACTION = 0.25
VERIFIED_ROWS = 8
VERIFY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class KeyedSearch:
    """A `NeighborSearch` whose row indices refer to `hashes`, stored with its fingerprint.

    Attributes:
        hashes: (M,) sorted content hashes; row i of `search` is hashes[i].
        search: the search over those rows.
        fingerprint: what the distances depend on (signal, k, radius), e.g. `cosine k=16 r=0.1`.
    """

    hashes: np.ndarray
    search: NeighborSearch
    fingerprint: str

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename): a kill never leaves a partial cache."""

        def write(temporary: str) -> None:
            with open(temporary, "wb") as handle:  # a handle: np.savez would append .npz to a name
                np.savez(
                    handle,
                    hashes=self.hashes.astype(str),
                    fingerprint=np.array(self.fingerprint),
                    topk_index=self.search.topk_index,
                    topk_distance=self.search.topk_distance,
                    pair_left=self.search.pair_left,
                    pair_right=self.search.pair_right,
                    pair_distance=self.search.pair_distance,
                )

        write_atomically(path, write)

    @classmethod
    def read(cls, path: str | os.PathLike) -> KeyedSearch:
        """The saved search; raises whatever the file's damage makes numpy raise (a truncated
        file: zipfile.BadZipFile). `SearchCache.load` turns that into no cache."""
        with np.load(path, allow_pickle=False) as saved:
            search = NeighborSearch(
                saved["topk_index"],
                saved["topk_distance"],
                saved["pair_left"],
                saved["pair_right"],
                saved["pair_distance"],
            )
            return cls(saved["hashes"].astype(object), search, str(saved["fingerprint"]))


@dataclass(frozen=True)
class SearchUpdate:
    """How a search was brought up to date: `mode` is `full`, `incremental` or `index` (an
    indexed search, `core.search.choose.EngineChoice.mode`), `reason` says why a full or indexed
    search ran; `searched_rows` rows were searched against all rows."""

    mode: str
    searched_rows: int
    reason: str = ""


@dataclass(frozen=True)
class SearchCache:
    """A search kept by content hash in one file between runs, for any engine.

    Attributes:
        path: the cache file (`.npz`); absent or unreadable: the search runs in full.
        warn: told the name of an unreadable file before it is removed (`read_or_discard`).
    """

    path: Path
    warn: Callable[[str], None] = logger.warning

    def load(self) -> KeyedSearch | None:
        """The saved search, or None (absent, or unreadable: then removed after a warning)."""
        return read_or_discard(self.path, KeyedSearch.read, self.warn)

    def save(self, search: KeyedSearch) -> None:
        """Write atomically (a kill never leaves a partial cache)."""
        search.save(self.path)

    def search(
        self, engine: NeighborEngine, hashes: np.ndarray, k: int, radius: float
    ) -> tuple[NeighborSearch, SearchUpdate]:
        """`engine.search(k, radius)` over rows keyed by `hashes`, brought up to date from the
        saved search where it still holds; the result is saved for the next run."""
        keyed, update = update_search(self.load(), hashes, engine, k, radius)
        self.save(keyed)
        return keyed.search, update


def fingerprint_of(engine: NeighborEngine, k: int, radius: float) -> str:
    """What a cached search's distances depend on (e.g. `cosine k=16 radius=0.1`); the engine's
    options (bf16 or not) give the same answer and are not part of it."""
    return f"{engine.signal} k={k} radius={radius!r}"


def update_search(
    previous: KeyedSearch | None,
    hashes: np.ndarray,
    engine: NeighborEngine,
    k: int,
    radius: float,
    verify_seed: int = 0,
) -> tuple[KeyedSearch, SearchUpdate]:
    """The search over `hashes`, reusing `previous` where it still holds.

    Args:
        previous: the last run's search, or None.
        hashes: (M,) sorted content hashes of this run.
        engine: a built engine over the rows of `hashes` (row i is hashes[i]); its full search is
            the reference result; `previous` is reused only if its fingerprint (`fingerprint_of`)
            matches.
        k, radius: as in `NeighborEngine.search` (k is clipped to M - 1).
        verify_seed: picks the reused rows that are searched again as a check.

    Returns:
        (KeyedSearch over `hashes`, SearchUpdate).
    """
    fingerprint = fingerprint_of(engine, k, radius)
    row_distances, pair_distances = engine.distances_from, engine.pair_distances

    def full_search() -> NeighborSearch:
        return engine.search(k, radius)

    rows = len(hashes)
    k = max(0, min(k, rows - 1))
    if previous is None:
        return KeyedSearch(hashes, full_search(), fingerprint), SearchUpdate("full", rows, "no previous search")
    if previous.fingerprint != fingerprint:
        return KeyedSearch(hashes, full_search(), fingerprint), SearchUpdate("full", rows, "search settings changed")

    old_row_of = {h: i for i, h in enumerate(previous.hashes.tolist())}
    old_rows = np.array([old_row_of.get(h, -1) for h in hashes.tolist()], dtype=np.int64)  # -1: new
    new_of_old = np.full(len(previous.hashes), -1, dtype=np.int64)
    new_of_old[old_rows[old_rows >= 0]] = np.nonzero(old_rows >= 0)[0]
    removed = new_of_old < 0

    old_topk = previous.search.topk_index
    kept = np.nonzero(old_rows >= 0)[0]
    lost_neighbor = (old_topk[old_rows[kept]] >= 0) & removed[np.maximum(old_topk[old_rows[kept]], 0)]
    dirty = kept[lost_neighbor.any(axis=1)]
    clean = np.setdiff1d(kept, dirty)  # rows whose old top-k still holds
    added = np.nonzero(old_rows < 0)[0]
    searched = np.union1d(added, dirty)
    if len(searched) > MAX_CHANGED_FRACTION * rows:
        return KeyedSearch(hashes, full_search(), fingerprint), SearchUpdate(
            "full", rows, f"{len(searched)} of {rows} rows changed"
        )

    distances = (
        np.array(row_distances(searched), dtype=np.float32) if len(searched) else np.empty((0, rows), np.float32)
    )
    distances[np.arange(len(searched)), searched] = np.inf  # a row is not its own neighbour

    topk_index = np.full((rows, k), -1, dtype=np.int64)
    topk_distance = np.full((rows, k), np.inf, dtype=np.float32)
    if k:
        # Searched rows: their k nearest from the block.
        part = np.argpartition(distances, k - 1, axis=1)[:, :k] if len(searched) else np.empty((0, k), np.int64)
        _put_sorted(topk_index, topk_distance, searched, part, np.take_along_axis(distances, part, axis=1))
        # Reused rows: old top-k (re-indexed; -1 and +inf pad) merged with the distances to new rows.
        reused = old_topk[old_rows[clean]]
        reused_index = np.where(reused >= 0, new_of_old[np.maximum(reused, 0)], -1)
        reused_distance = np.where(reused >= 0, previous.search.topk_distance[old_rows[clean]], np.inf).astype(
            np.float32
        )
        added_position = np.searchsorted(searched, added)
        candidates = np.concatenate([reused_index, np.broadcast_to(added, (len(clean), len(added)))], axis=1)
        candidate_distance = np.concatenate([reused_distance, distances[added_position][:, clean].T], axis=1)
        order = nearest_first_order(candidate_distance, np.where(candidates >= 0, candidates, rows), k)
        merged_distance = np.take_along_axis(candidate_distance, order, axis=1)
        merged_index = np.where(np.isfinite(merged_distance), np.take_along_axis(candidates, order, axis=1), -1)
        topk_index[clean, : order.shape[1]] = merged_index
        topk_distance[clean, : order.shape[1]] = merged_distance

    # Pairs: old pairs between contents still present, plus every pair of a searched row.
    old_pairs = previous.search
    keep_pair = ~removed[old_pairs.pair_left] & ~removed[old_pairs.pair_right]
    left_parts = [new_of_old[old_pairs.pair_left[keep_pair]]]
    right_parts = [new_of_old[old_pairs.pair_right[keep_pair]]]
    distance_parts = [old_pairs.pair_distance[keep_pair]]
    block_row, block_column = np.nonzero(distances <= radius + 1e-5)  # re-checked exactly below
    row = searched[block_row]
    new_left, new_right = np.minimum(row, block_column), np.maximum(row, block_column)
    new_distance = np.asarray(pair_distances(new_left, new_right), dtype=np.float32)
    within = new_distance <= radius
    left_parts.append(new_left[within])
    right_parts.append(new_right[within])
    distance_parts.append(new_distance[within])
    left, right, distance = np.concatenate(left_parts), np.concatenate(right_parts), np.concatenate(distance_parts)
    # A pair between two searched rows appears twice; a pair of a dirty row may also be an old one.
    order = np.lexsort((right, left))
    left, right, distance = left[order], right[order], distance[order]
    first = np.ones(len(left), dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    search = NeighborSearch(topk_index, topk_distance, left[first], right[first], distance[first])

    if not _verified(search, row_distances, clean, verify_seed):
        return KeyedSearch(hashes, full_search(), fingerprint), SearchUpdate(
            "full", rows, "the previous search no longer matches the vectors"
        )
    return KeyedSearch(hashes, search, fingerprint), SearchUpdate("incremental", len(searched))


def _put_sorted(topk_index, topk_distance, rows, index, distance):
    """Write each row's candidates ascending by distance, ties by index (as the full search does)."""
    topk_index[rows], topk_distance[rows] = nearest_first(index, distance)
    topk_index[rows] = np.where(np.isfinite(topk_distance[rows]), topk_index[rows], -1)


def _verified(search: NeighborSearch, row_distances, reused: np.ndarray, seed: int) -> bool:
    """Search a few reused rows again: their nearest distances must match what was reused."""
    k = search.topk_index.shape[1]
    if k == 0 or len(reused) == 0:
        return True
    sample = np.sort(np.random.default_rng(seed).choice(reused, size=min(VERIFIED_ROWS, len(reused)), replace=False))
    distances = np.array(row_distances(sample), dtype=np.float32)
    distances[np.arange(len(sample)), sample] = np.inf
    expected = np.sort(distances, axis=1)[:, :k]
    return bool(np.allclose(search.topk_distance[sample], expected, atol=VERIFY_TOLERANCE, rtol=0.0))

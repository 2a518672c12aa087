"""Uniqueness scoring at scale: exact chunked search at 10k / 100k, and an index for 1M.

Usage:
    .venv/bin/python bench/scoring.py [--sizes 10000 100000] [--reference-max 20000]
                                      [--index-rows 100000] [--index-queries 1000]

Data: synthetic 768-d clusters (N/20 centres, members at cosine ~0.75 from each other) with planted
exact copies (2 %, equal vectors under another pixel hash) and near duplicates (3 %, cosine ~0.99).

Figures (each size runs in its own subprocess, so peak RSS is that size's own):
  * `core.search.contents.find_content_neighbors` + `core.scoring.compute_uniqueness_scores`: seconds and peak RSS
    (resource.getrusage), and how time grows with N;
  * the search `find_content_neighbors` runs (`search_neighbors`, precision "auto": the bf16
    candidate path on CPUs with bf16 matrix units) against the float32 path, in the same process:
    seconds, and equality of top-k sets (ties at the k-th distance aside), distances and pairs.
    Up to `--reference-max` rows the float32 path runs on all rows; above, on 3 samples of
    chunks (~4 % of the rows), its time scaled to all rows and equality checked on those rows;
  * 1M needs an index: `bench/scoring_index.py` at each of `--index-rows` (e.g. 10000 100000
    1000000; 0 skips it): the vectors in a LanceDB table, `core.search.ivf.search_neighbors_ivf` (faiss
    IVF-PQ + exact re-rank) streaming them, recall against exact search on `--index-queries`
    sampled rows, peak RSS, and LanceDB's own indexes with batched search up to 100k rows.

faiss-cpu is the `scale` extra (`pip install 'imgdedup-pipeline[scale]'`; also in `dev`).
Prints one line per figure and ends with one line of JSON holding every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

DIMENSIONS = 768


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_vectors(rows: int, seed: int = 0) -> np.ndarray:
    """(rows, 768) float32 unit rows: clusters plus planted exact copies and near duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, rows // 20), DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, DIMENSIONS)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = rng.choice(rows, size=(int(rows * 0.02), 2), replace=False) if rows >= 50 else np.empty((0, 2), int)
    vectors[copies[:, 1]] = vectors[copies[:, 0]]
    near = rng.choice(rows, size=(int(rows * 0.03), 2), replace=False) if rows >= 50 else np.empty((0, 2), int)
    vectors[near[:, 1]] = vectors[near[:, 0]] + 0.004 * rng.standard_normal((len(near), DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def float32_rows(vectors: np.ndarray, k: int, radius: float, first: int, last: int, chunk: int):
    """The float32 search's answer for rows first..last only, in chunks of `chunk` rows: top-k in
    those rows (others -1 / inf) and the pairs whose left row is among them."""
    import torch

    from imgdedup_pipeline.core.distances import nearest_first
    from imgdedup_pipeline.core.search.exact_cosine import cosine_pair_distances
    from imgdedup_pipeline.core.search.result import NeighborSearch

    count = len(vectors)
    k = max(0, min(k, count - 1))
    every = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    topk_index = np.full((count, k), -1, dtype=np.int64)
    topk_distance = np.full((count, k), np.inf, dtype=np.float32)
    lefts, rights = [], []
    with torch.inference_mode():
        for start in range(first, last, chunk):
            stop = min(start + chunk, last)
            local = torch.arange(stop - start)
            similarity = every[start:stop] @ every.T
            similarity[local, local + start] = -torch.inf
            if k:
                values, index = torch.topk(similarity, k, dim=1, largest=True, sorted=True)
                topk_index[start:stop], topk_distance[start:stop] = nearest_first(
                    index.numpy(), np.clip(1.0 - values.numpy(), 0.0, 2.0)
                )
            row, column = torch.nonzero(similarity >= 1.0 - radius - 1e-5, as_tuple=True)
            lefts.append(row.numpy() + start)
            rights.append(column.numpy())
    left, right = np.concatenate(lefts), np.concatenate(rights)
    left, right = left[left < right], right[left < right]
    distance = cosine_pair_distances(vectors, left, right)
    within = distance <= radius
    order = np.lexsort((right[within], left[within]))
    return NeighborSearch(topk_index, topk_distance, left[within][order], right[within][order], distance[within][order])


def compare_with_fp32(vectors: np.ndarray, k: int, radius: float, reference_max: int) -> dict:
    """Time the exact search the chooser takes (bf16 where it pays) and the float32 path in this
    process; check they agree.

    Above `reference_max` rows the float32 reference runs on three samples of chunks only (start,
    middle, end; `float32_rows`, this benchmark's own code) and its time is scaled by rows /
    sampled rows; top-k and pairs (by left row) are compared on the sampled rows.
    """
    from imgdedup_pipeline.core.distances import cosine_distance
    from imgdedup_pipeline.core.search.choose import choose_engine
    from imgdedup_pipeline.core.search.exact_cosine import DEFAULT_CHUNK_ROWS, MAX_BLOCK_CELLS

    rows = len(vectors)
    engine = choose_engine("cosine", rows, "exact").engine.build(vectors)
    started = time.perf_counter()
    new = engine.search(k, radius)
    new_seconds = time.perf_counter() - started
    chunk = max(1, min(DEFAULT_CHUNK_ROWS, MAX_BLOCK_CELLS // rows))
    if rows <= reference_max or rows <= 6 * chunk:
        spans = [(0, rows)]
    else:
        spans = [
            (start, min(start + 2 * chunk, rows))
            for start in (0, rows // 2 // chunk * chunk, (rows - 2 * chunk) // chunk * chunk)
        ]
    fp32_seconds, sampled, topk_ties, topk_equal, pairs_equal, distance_diff = 0.0, 0, 0, True, True, 0.0
    for first, last in spans:
        started = time.perf_counter()
        old = float32_rows(vectors, k, radius, first, last, chunk)
        fp32_seconds += time.perf_counter() - started
        sampled += last - first
        a, b = new.topk_index[first:last], old.topk_index[first:last]
        distance_diff = max(
            distance_diff, float(np.abs(new.topk_distance[first:last] - old.topk_distance[first:last]).max(initial=0.0))
        )
        for row in np.nonzero((np.sort(a, axis=1) != np.sort(b, axis=1)).any(axis=1))[0]:
            # Sets may differ only by rows tied at the k-th distance.
            differing = sorted(set(a[row].tolist()) ^ set(b[row].tolist()))
            distance = cosine_distance(vectors[differing] @ vectors[first + row])
            tied = bool(np.all(np.abs(distance - old.topk_distance[first + row, -1]) <= 1e-6))
            topk_ties += tied
            topk_equal &= tied
        mine = (new.pair_left >= first) & (new.pair_left < last)
        theirs = (old.pair_left >= first) & (old.pair_left < last)
        pairs_equal &= bool(
            np.array_equal(new.pair_left[mine], old.pair_left[theirs])
            and np.array_equal(new.pair_right[mine], old.pair_right[theirs])
            and np.array_equal(new.pair_distance[mine], old.pair_distance[theirs])
        )
    fp32_seconds *= rows / sampled
    return {
        "search_path": engine.precision,
        "search_new_seconds": round(new_seconds, 2),
        "search_fp32_seconds": round(fp32_seconds, 2),
        "search_fp32_timed_rows": sampled,
        "search_speedup": round(fp32_seconds / new_seconds, 2),
        "exact_topk_equal": topk_equal,
        "topk_rows_differing_by_ties": topk_ties,
        "topk_max_distance_difference": distance_diff,
        "exact_pairs_equal": pairs_equal,
        "checked_rows": sampled,
    }


def run_one(rows: int, reference_max: int) -> dict:
    import torch  # noqa: F401  (imported before the clock starts, as in a pipeline process)

    from imgdedup_pipeline.core.scoring import Thresholds, compute_uniqueness_scores
    from imgdedup_pipeline.core.search.contents import find_content_neighbors
    from imgdedup_pipeline.core.search.signals import NEIGHBORS_PER_ROW

    vectors = synthetic_vectors(rows)
    hashes = [f"{i:08x}" for i in range(rows)]
    vectors_by_hash = dict(zip(hashes, vectors))
    images = pd.DataFrame({"image_id": hashes, "path": [f"img/{h}.jpg" for h in hashes], "pixel_hash": hashes})
    keep_rank = pd.Series(np.arange(rows), index=hashes)
    thresholds = Thresholds()
    baseline_rss = peak_rss_mib()
    started = time.perf_counter()
    neighbors = find_content_neighbors(vectors_by_hash, radius=thresholds.near_duplicate_cosine_distance)
    searched = time.perf_counter()
    scores = compute_uniqueness_scores(images, neighbors, keep_rank, thresholds)
    finished = time.perf_counter()
    result = {
        "rows": rows,
        "seconds": round(finished - started, 2),
        "search_seconds": round(searched - started, 2),
        "score_seconds": round(finished - searched, 2),
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "input_rss_mib": round(baseline_rss, 0),
        "labels": scores["label"].value_counts().to_dict(),
    }
    # find_content_neighbors normalises again; the vectors are unit rows already.
    result.update(
        compare_with_fp32(vectors, NEIGHBORS_PER_ROW, thresholds.near_duplicate_cosine_distance, reference_max)
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--reference-max",
        type=int,
        default=20_000,
        help="largest size at which the float32 path runs on all rows (above: on a sample)",
    )
    parser.add_argument(
        "--index-rows",
        type=int,
        nargs="+",
        default=[100_000],
        help="sizes run through the index (bench/scoring_index.py); 0 skips",
    )
    parser.add_argument("--index-queries", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.reference_max)))
        return 0
    figures = {"exact": {}}
    for rows in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(rows), "--reference-max", str(args.reference_max)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        figures["exact"][str(rows)] = result
        scaled = (
            ""
            if result["search_fp32_timed_rows"] == rows
            else f", scaled from {result['search_fp32_timed_rows']:,d} rows"
        )
        extra = (
            f"; search {result['search_path']} {result['search_new_seconds']} s vs float32 {result['search_fp32_seconds']} s{scaled} "
            f"({result['search_speedup']}x), same top-k {result['exact_topk_equal']} ({result['topk_rows_differing_by_ties']} rows differ by ties), "
            f"same pairs {result['exact_pairs_equal']}"
        )
        print(
            f"exact {rows:>8,d} rows: {result['seconds']:7.2f} s (search {result['search_seconds']} s), peak RSS {result['peak_rss_mib']:.0f} MiB{extra}",
            flush=True,
        )
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        exponent = np.log(figures["exact"][str(large)]["seconds"] / figures["exact"][str(small)]["seconds"]) / np.log(
            large / small
        )
        figures["exact_time_growth_exponent"] = round(float(exponent), 2)
        extrapolated = figures["exact"][str(large)]["seconds"] * (1e6 / large) ** 2
        figures["exact_1m_extrapolated_seconds"] = round(float(extrapolated), 0)
        print(f"time grows as N^{exponent:.2f}; exact at 1M would take ~{extrapolated:,.0f} s (N^2 from {large:,d})")
    index_rows = [rows for rows in args.index_rows if rows > 0]
    if index_rows:
        from bench.scoring_index import run_index_sizes  # each size and step in its own subprocess

        try:
            figures["index"] = run_index_sizes(index_rows, args.index_queries)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

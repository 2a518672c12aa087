"""Uniqueness scoring at scale: exact chunked search at 10k / 100k, and an index for 1M.

Usage:
    .venv/bin/python bench/scoring.py [--sizes 10000 100000] [--reference-max 20000]
                                      [--index-rows 100000] [--index-queries 1000]

Data: synthetic 768-d clusters (N/20 centres, members at cosine ~0.75 from each other) with planted
exact copies (2 %, equal vectors under another pixel hash) and near duplicates (3 %, cosine ~0.99).

Figures (each size runs in its own subprocess, so peak RSS is that size's own):
  * `core.scoring.find_content_neighbors` + `compute_uniqueness_scores`: seconds and peak RSS
    (resource.getrusage), and how time grows with N;
  * up to `--reference-max` rows, the previous numpy search (argpartition + nonzero over every
    distance block) timed in the same process, and the new search checked exactly against it;
  * 1M needs an index: IVF-flat in faiss-cpu and IVF-PQ / HNSW-style search in LanceDB, built on
    `--index-rows` rows, batched search for `--index-queries` sampled queries, recall@1 against
    exact search, build and query seconds, and a linear extrapolation of both to 1M rows.

faiss-cpu is a benchmark extra (`pip install faiss-cpu`), never a runtime dependency.
Prints one line per figure and ends with one line of JSON holding every figure.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
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
    vectors = centres[rng.integers(0, len(centres), rows)] + 0.6 * rng.standard_normal((rows, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = rng.choice(rows, size=(int(rows * 0.02), 2), replace=False) if rows >= 50 else np.empty((0, 2), int)
    vectors[copies[:, 1]] = vectors[copies[:, 0]]
    near = rng.choice(rows, size=(int(rows * 0.03), 2), replace=False) if rows >= 50 else np.empty((0, 2), int)
    vectors[near[:, 1]] = vectors[near[:, 0]] + 0.004 * rng.standard_normal((len(near), DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def previous_search(vectors: np.ndarray, k: int, radius: float, chunk_rows: int = 2048):
    """The search as it was before this benchmark (numpy distance blocks, argpartition, nonzero)."""
    rows = len(vectors)
    k = max(0, min(k, rows - 1))
    topk_index = np.full((rows, k), -1, dtype=np.int64)
    pairs = []
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        distance = 1.0 - vectors[start:stop] @ vectors.T
        np.clip(distance, 0.0, 2.0, out=distance)
        local = np.arange(stop - start)
        distance[local, local + start] = np.inf
        part = np.argpartition(distance, k - 1, axis=1)[:, :k]
        part_distance = np.take_along_axis(distance, part, axis=1)
        order = np.lexsort((part, part_distance), axis=1)
        topk_index[start:stop] = np.take_along_axis(part, order, axis=1)
        close_row, close_col = np.nonzero(distance <= radius)
        close_row += start
        keep = close_row < close_col
        pairs.append(np.stack([close_row[keep], close_col[keep]], axis=1))
    return topk_index, np.concatenate(pairs)


def run_one(rows: int, reference_max: int) -> dict:
    import torch  # noqa: F401  (imported before the clock starts, as in a pipeline process)

    from core.neighbors import search_neighbors
    from core.scoring import NEIGHBORS_PER_ROW, Thresholds, compute_uniqueness_scores, find_content_neighbors

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
    if rows <= reference_max:
        radius = thresholds.near_duplicate_cosine_distance
        started = time.perf_counter()
        new = search_neighbors(vectors, k=NEIGHBORS_PER_ROW, radius=radius)
        new_seconds = time.perf_counter() - started
        started = time.perf_counter()
        old_index, old_pairs = previous_search(vectors, NEIGHBORS_PER_ROW, radius)
        old_seconds = time.perf_counter() - started
        result["search_new_seconds"] = round(new_seconds, 2)
        result["search_previous_seconds"] = round(old_seconds, 2)
        result["search_speedup"] = round(old_seconds / new_seconds, 2)
        result["top1_equal_fraction"] = float((new.topk_index[:, 0] == old_index[:, 0]).mean())
        result["pairs_equal"] = bool(set(map(tuple, old_pairs.tolist())) == set(zip(new.pair_left.tolist(), new.pair_right.tolist())))
    return result


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    similarity = vectors[queries] @ vectors.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    return similarity.argmax(axis=1)


def run_index(rows: int, queries: int, workdir: Path) -> dict:
    """Approximate top-1 (excluding self) for sampled queries: faiss IVF-flat vs LanceDB indexes."""
    vectors = synthetic_vectors(rows, seed=1)
    rng = np.random.default_rng(7)
    sample = rng.choice(rows, size=queries, replace=False)
    truth = exact_top1(vectors, sample)
    result = {"rows": rows, "queries": queries}

    import faiss

    lists = int(4 * np.sqrt(rows))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIMENSIONS)
    index = faiss.IndexIVFFlat(quantizer, DIMENSIONS, lists, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors[rng.choice(rows, size=min(rows, 40 * lists), replace=False)])
    index.add(vectors)
    built = time.perf_counter()
    for probes in (8, 32):
        index.nprobe = probes
        started_q = time.perf_counter()
        _, found = index.search(vectors[sample], 2)
        seconds = time.perf_counter() - started_q
        top1 = np.where(found[:, 0] == sample, found[:, 1], found[:, 0])
        result[f"faiss_ivfflat_nprobe{probes}"] = {
            "build_seconds": round(built - started, 1),
            "query_seconds": round(seconds, 2),
            "recall_at_1": float((top1 == truth).mean()),
            "extrapolated_1m_all_queries_seconds": round((built - started) * 1e6 / rows + seconds / queries * 1e6 * (1e6 / rows), 0),
        }
    result["faiss_peak_rss_mib"] = round(peak_rss_mib(), 0)

    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(workdir / "lancedb"))
    table = db.create_table(
        "vectors",
        pa.table({"row": pa.array(np.arange(rows)), "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIMENSIONS)}),
        mode="overwrite",
    )
    for index_type, options in (("IVF_PQ", {"num_partitions": lists, "num_sub_vectors": 96}), ("IVF_HNSW_SQ", {"num_partitions": max(1, lists // 8)})):
        started = time.perf_counter()
        try:
            table.create_index(metric="cosine", vector_column_name="vector", index_type=index_type, replace=True, **options)
        except Exception as exc:  # a LanceDB version without this index type: report, go on
            result[f"lancedb_{index_type}"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            continue
        built = time.perf_counter()
        found = []
        started_q = time.perf_counter()
        for q in sample:
            query = table.search(vectors[q]).metric("cosine").limit(2).nprobes(32)
            if index_type == "IVF_PQ":
                query = query.refine_factor(10)
            hits = query.select(["row"]).to_list()
            rows_found = [h["row"] for h in hits if h["row"] != q]
            found.append(rows_found[0] if rows_found else -1)
        seconds = time.perf_counter() - started_q
        result[f"lancedb_{index_type}"] = {
            "build_seconds": round(built - started, 1),
            "query_seconds": round(seconds, 2),
            "recall_at_1": float((np.array(found) == truth).mean()),
            "extrapolated_1m_all_queries_seconds": round((built - started) * 1e6 / rows + seconds / queries * 1e6 * (1e6 / rows), 0),
        }
    result["peak_rss_mib"] = round(peak_rss_mib(), 0)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--reference-max", type=int, default=20_000, help="largest size also timed with the previous search")
    parser.add_argument("--index-rows", type=int, default=100_000)
    parser.add_argument("--index-queries", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.reference_max)))
        return 0
    if args.index_only:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(run_index(args.index_rows, args.index_queries, Path(workdir))))
        return 0
    figures = {"exact": {}}
    for rows in args.sizes:
        child = subprocess.run([sys.executable, __file__, "--one", str(rows), "--reference-max", str(args.reference_max)], capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        figures["exact"][str(rows)] = result
        extra = f", previous search {result['search_previous_seconds']} s vs {result['search_new_seconds']} s ({result['search_speedup']}x), same pairs {result['pairs_equal']}, top-1 agreement {result['top1_equal_fraction']:.4f}" if "search_speedup" in result else ""
        print(f"exact {rows:>8,d} rows: {result['seconds']:7.2f} s (search {result['search_seconds']} s), peak RSS {result['peak_rss_mib']:.0f} MiB{extra}", flush=True)
    if len(args.sizes) >= 2:
        small, large = args.sizes[0], args.sizes[-1]
        exponent = np.log(figures["exact"][str(large)]["seconds"] / figures["exact"][str(small)]["seconds"]) / np.log(large / small)
        figures["exact_time_growth_exponent"] = round(float(exponent), 2)
        extrapolated = figures["exact"][str(large)]["seconds"] * (1e6 / large) ** 2
        figures["exact_1m_extrapolated_seconds"] = round(float(extrapolated), 0)
        print(f"time grows as N^{exponent:.2f}; exact at 1M would take ~{extrapolated:,.0f} s (N^2 from {large:,d})")
    if args.index_rows:
        child = subprocess.run([sys.executable, __file__, "--index-only", "--index-rows", str(args.index_rows), "--index-queries", str(args.index_queries)], capture_output=True, text=True)
        if child.returncode:
            print(child.stderr[-2000:], file=sys.stderr)
            return child.returncode
        figures["index"] = json.loads(child.stdout.strip().splitlines()[-1])
        for name, value in figures["index"].items():
            print(f"index {name}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

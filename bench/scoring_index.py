"""Scoring at 1M: all-rows neighbour search through an index, the vectors streamed from LanceDB.

Usage:
    .venv/bin/python bench/scoring_index.py [--rows 10000 100000 1000000] [--queries 1000]
                                            [--lancedb-max-rows 100000] [--lancedb-queries 1000]
                                            [--exact-max-rows 100000] [--workdir DIR]
(also run by `bench/scoring.py --index-rows ...`, which adds these figures to its JSON line).

For each N, each step in its own subprocess (so that its peak RSS, resource.getrusage, is its own):
  * write: synthetic 768-d clustered vectors with planted exact copies and near duplicates
    (`bench.scoring.synthetic_vectors`, generated 100k rows at a time, so that the writer stays
    small) into a LanceDB table `pixel_hash, vector` in a temporary directory;
  * faiss: `core.search.ivf.search_neighbors_ivf` over the table streamed in batches (read; build:
    k-means, each row's nearest centroids, IVF-PQ fast-scan index; search: batched all-rows
    search, exact re-rank, graph refinement, close pairs), then recall against exact search on
    `--queries` sampled rows; the exact answers come from two more chunked scans of the table
    after the search (never an N x N matrix, never a second in-memory copy);
  * exact (N <= --exact-max-rows): `core.search.engines.search_neighbors` on the same table (the
    search the pipeline runs today), for the crossover;
  * stage: the pipeline's scoring stage as `score_uniqueness` runs it, at `--neighbor-search`
    (default auto: the index from 250k contents): `LanceDBResource.read_content_vectors` (the
    vectors streamed from the table into one matrix in hash order), synthetic pHashes with planted
    near and rotated copies (`synthetic_phashes`), `core.search.contents.find_content_neighbors` (embedding
    + pHash signals) and `compute_uniqueness_scores` (the matrix freed once searched, as in the
    asset); seconds per part, peak RSS (and after each part), and on the sampled rows the nearest
    distance against an exact fused scan (cosine and pHash bits) over the vectors read again;
  * lancedb (N <= --lancedb-max-rows): LanceDB's own IVF_PQ (and IVF_HNSW_SQ) index on the same
    table, queried with its batched multi-vector search for `--lancedb-queries` sampled rows,
    recall on the same sample, and the all-rows time extrapolated from the per-query time.

Recall@1 counts a row as found when its neighbour is the exact one (`strict`), or one at the exact
top-1 distance (`tie_aware`: a near duplicate of an exactly copied row has two neighbours at one
distance). Prints one line per step and ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from bench.scoring import DIMENSIONS, synthetic_vectors  # noqa: E402
from imgdedup_pipeline.resources.lancedb import table_name_for  # noqa: E402

MODEL = "bench/synthetic-768"
TABLE = table_name_for(MODEL)  # the table the pipeline's LanceDBResource opens for MODEL

GENERATE_ROWS = 100_000  # rows generated (and written) at a time
NEIGHBORS = 16  # core.search.signals.NEIGHBORS_PER_ROW
RADIUS = 0.1  # the default near-duplicate radius (cosine distance, 2 x 0.05)
HASH_BITS = 10  # the pipeline's default hash threshold


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_chunks(rows: int, seed: int = 1):
    """`synthetic_vectors` in chunks of GENERATE_ROWS: each chunk is its own set of clusters (N/20
    centres over the whole set, ~20 members each), copies and near duplicates, as in one call."""
    for number, start in enumerate(range(0, rows, GENERATE_ROWS)):
        size = min(GENERATE_ROWS, rows - start)
        yield start, synthetic_vectors(size, seed=seed * 1000 + number)


def key_for(row: int) -> str:
    return f"{row:064x}"  # the width of a real pixel hash (sha256 hex)


def write_table(uri: str, rows: int) -> dict:
    import lancedb
    import pyarrow as pa

    started = time.perf_counter()
    db = lancedb.connect(uri)
    table = None
    for start, vectors in synthetic_chunks(rows):
        data = pa.table(
            {
                "pixel_hash": pa.array([key_for(i) for i in range(start, start + len(vectors))], pa.string()),
                "model_id": pa.array([MODEL] * len(vectors), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIMENSIONS),
            }
        )
        if table is None:
            table = db.create_table(TABLE, data, mode="overwrite")
        else:
            table.add(data)
        del data, vectors
    return {
        "rows": table.count_rows(),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def sample_rows(rows: int, queries: int) -> np.ndarray:
    return np.sort(np.random.default_rng(7).choice(rows, size=min(queries, rows), replace=False))


def read_rows(table, rows: np.ndarray) -> np.ndarray:
    """L2-normalised float32 vectors of the given sorted table rows, from one chunked scan."""
    from imgdedup_pipeline.core.search.batches import lancedb_batches
    from imgdedup_pipeline.core.search.result import l2_normalize

    vectors = np.empty((len(rows), DIMENSIONS), np.float32)
    offset = 0
    for _, batch in lancedb_batches(table, batch_rows=32_768):
        inside = (rows >= offset) & (rows < offset + len(batch))
        vectors[inside] = l2_normalize(batch[rows[inside] - offset])
        offset += len(batch)
    return vectors


def exact_for_sample(table, sample: np.ndarray, k: int, radius: float) -> dict:
    """Exact top-k (ties by the lower row) and all rows within `radius` for the sampled rows, from
    two chunked scans of the table (numpy float32 GEMM): O(len(sample) x batch) memory."""
    from imgdedup_pipeline.core.distances import cosine_distance
    from imgdedup_pipeline.core.search.batches import lancedb_batches
    from imgdedup_pipeline.core.search.result import l2_normalize

    queries = read_rows(table, sample)
    best = np.full((len(sample), k), -np.inf, np.float32)
    best_index = np.full((len(sample), k), -1, np.int64)
    pairs: dict[int, set[int]] = {}
    offset = 0
    for _, batch in lancedb_batches(table, batch_rows=32_768):
        similarity = queries @ l2_normalize(batch).T
        own = (sample >= offset) & (sample < offset + len(batch))
        similarity[np.nonzero(own)[0], sample[own] - offset] = -np.inf
        width = min(k, len(batch))
        index = np.argpartition(-similarity, width - 1, axis=1)[:, :width]
        merged = np.concatenate([best, np.take_along_axis(similarity, index, 1)], 1)
        merged_index = np.concatenate([best_index, index + offset], 1)
        # Ascending distance, ties by the lower row (as the exact search).
        order = np.lexsort((merged_index, -merged), axis=1)[:, :k]
        best = np.take_along_axis(merged, order, 1)
        best_index = np.take_along_axis(merged_index, order, 1)
        row, column = np.nonzero((1.0 - similarity) <= radius)  # float32, as the exact search re-checks a pair
        for q, other in zip(row.tolist(), (column + offset).tolist()):
            pairs.setdefault(q, set()).add(other)
        offset += len(batch)
    return {"queries": queries, "top_index": best_index, "top_distance": cosine_distance(best), "pairs": pairs}


def exact_distances(table, queries: np.ndarray, found: np.ndarray) -> np.ndarray:
    """float32 cosine distances from each query to the rows it found (inf where -1), from one scan."""
    from imgdedup_pipeline.core.distances import cosine_distance

    wanted = np.unique(found[found >= 0])
    vectors = read_rows(table, wanted)
    position = np.searchsorted(wanted, np.maximum(found, 0))
    distance = cosine_distance(np.einsum("qd,qkd->qk", queries, vectors[np.minimum(position, len(wanted) - 1)])).astype(
        np.float32
    )
    return np.where(found >= 0, distance, np.inf).astype(np.float32)


def recall_figures(
    sample: np.ndarray, truth: dict, found_index: np.ndarray, found_distance: np.ndarray, found_pairs: dict | None
) -> dict:
    """Recall@1 (strict / tie-aware), recall@k, top-1 distance error where the neighbour matches,
    and close-pair recall, over the sampled rows."""
    top1 = found_index[:, 0]
    strict = top1 == truth["top_index"][:, 0]
    tie_aware = found_distance[:, 0] <= truth["top_distance"][:, 0] + 1e-6
    k = truth["top_index"].shape[1]
    at_k = np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(found_index, truth["top_index"])])
    figures = {
        "recall_at_1": round(float(tie_aware.mean()), 4),
        "recall_at_1_strict": round(float(strict.mean()), 4),
        f"recall_at_{k}": round(float(at_k), 4),
        "top1_distance_max_error_where_matched": float(
            np.abs(found_distance[strict, 0] - truth["top_distance"][strict, 0]).max()
        )
        if strict.any()
        else None,
    }
    if found_pairs is not None:
        expected = sum(len(v) for v in truth["pairs"].values())
        hit = sum(len(v & found_pairs.get(q, set())) for q, v in truth["pairs"].items())
        figures["close_pairs_of_sample"] = expected
        figures["close_pair_recall"] = round(hit / expected, 4) if expected else None
    return figures


def run_faiss(uri: str, rows: int, queries: int) -> dict:
    import lancedb

    from imgdedup_pipeline.core.search.batches import lancedb_batches, read_batches
    from imgdedup_pipeline.core.search.ivf import IndexedSearch, search_neighbors_ivf

    table = lancedb.connect(uri).open_table(TABLE)
    count = table.count_rows()
    baseline = peak_rss_mib()
    started = time.perf_counter()
    keys, vectors = read_batches(lancedb_batches(table), rows=count)
    read = time.perf_counter()
    result = search_neighbors_ivf(vectors, k=NEIGHBORS, radius=RADIUS)
    del vectors
    result = IndexedSearch(
        result.topk_index, result.topk_distance, result.pair_left, result.pair_right, result.pair_distance, keys
    )
    finished = time.perf_counter()
    search_rss = peak_rss_mib()
    figures = {
        "engine": "faiss",
        "rows": count,
        "total_seconds": round(finished - started, 1),
        "read_seconds": round(read - started, 1),
        # build + search: k-means, filling the index, all-rows search + exact re-rank, graph
        # refinement, exact scan of dense rows (the phases are not timed apart).
        "search_seconds": round(finished - read, 1),
        "pairs": int(len(result.pair_left)),
        "peak_rss_mib": round(search_rss),
        "import_rss_mib": round(baseline),
    }
    keys_ok = bool(
        result.keys is not None
        and len(result.keys) == count
        and result.keys[0] == key_for(0)
        and result.keys[-1] == key_for(count - 1)
    )
    sample = sample_rows(count, queries)
    topk_index, topk_distance = result.topk_index[sample], result.topk_distance[sample]
    in_sample = np.isin(result.pair_left, sample) | np.isin(result.pair_right, sample)
    position = {int(r): i for i, r in enumerate(sample)}
    found_pairs: dict[int, set[int]] = {}
    for left, right in zip(result.pair_left[in_sample].tolist(), result.pair_right[in_sample].tolist()):
        if left in position:
            found_pairs.setdefault(position[left], set()).add(right)
        if right in position:
            found_pairs.setdefault(position[right], set()).add(left)
    del result
    started = time.perf_counter()
    truth = exact_for_sample(table, sample, NEIGHBORS, RADIUS)
    figures["exact_sample_seconds"] = round(time.perf_counter() - started, 1)
    figures.update(recall_figures(sample, truth, topk_index, topk_distance, found_pairs))
    figures["keys_in_table_order"] = keys_ok
    return figures


def run_exact(uri: str, rows: int, queries: int) -> dict:
    """`core.search.engines.search_neighbors` (exact, the search the pipeline runs by default) on the same
    table, for the crossover with the index; recall of the index is measured against the same
    arithmetic in `run_faiss`."""
    import lancedb

    from imgdedup_pipeline.core.search.batches import lancedb_batches, read_batches
    from imgdedup_pipeline.core.search.engines import search_neighbors

    table = lancedb.connect(uri).open_table(TABLE)
    started = time.perf_counter()
    _, vectors = read_batches(lancedb_batches(table), rows=table.count_rows())
    read = time.perf_counter()
    search_neighbors(vectors, k=NEIGHBORS, radius=RADIUS)
    finished = time.perf_counter()
    return {
        "engine": "exact",
        "rows": len(vectors),
        "read_seconds": round(read - started, 1),
        "search_seconds": round(finished - read, 1),
        "total_seconds": round(finished - started, 1),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def synthetic_phashes(rows: int, seed: int = 3) -> np.ndarray:
    """(rows, 8) uint64 pHashes, identity first: random, with 3 % near copies (0-12 bits flipped
    from another row's identity hash) of which half are rotated (the copy's variant 3 holds it)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.int64).max, size=(rows, 8), dtype=np.int64).view(np.uint64)
    planted = rng.choice(rows, size=(int(rows * 0.03), 2), replace=False)
    flips = np.zeros(len(planted), np.uint64)
    for bit_count in range(1, 13):
        chosen = rng.integers(0, 13, len(planted)) == bit_count
        for _ in range(bit_count):
            flips[chosen] ^= np.left_shift(np.uint64(1), rng.integers(0, 64, int(chosen.sum())).astype(np.uint64))
    rotated = rng.random(len(planted)) < 0.5
    hashes[planted[~rotated, 1], 0] = hashes[planted[~rotated, 0], 0] ^ flips[~rotated]
    hashes[planted[rotated, 1], 3] = hashes[planted[rotated, 0], 0] ^ flips[rotated]
    return hashes


def run_stage(uri: str, rows: int, queries: int, engine: str = "auto") -> dict:
    """The scoring stage as `score_uniqueness` runs it, on the table written by `write_table`."""
    import pandas as pd

    from imgdedup_pipeline.core.distances import cosine_distance
    from imgdedup_pipeline.core.images import EDGE_HASH_WORDS, informative_phashes
    from imgdedup_pipeline.core.scoring import Thresholds, compute_uniqueness_scores
    from imgdedup_pipeline.core.search.contents import find_content_neighbors
    from imgdedup_pipeline.core.search.exact_hamming import hamming_distances_of_rows
    from imgdedup_pipeline.core.search.signals import HashSignal
    from imgdedup_pipeline.resources.lancedb import LanceDBResource

    baseline = peak_rss_mib()
    keys = [key_for(i) for i in range(rows)]
    started = time.perf_counter()
    phashes = synthetic_phashes(rows)
    # As the asset's (`HashSignal.from_catalog`): one matrix in pixel-hash order (keys ascend). The
    # synthetic pHashes stand for no picture: equal edge hashes confirm every turned match.
    signal = HashSignal(np.array(keys, dtype=object), phashes, np.zeros((rows, EDGE_HASH_WORDS), np.uint64), HASH_BITS)
    prepared = time.perf_counter()
    peaks = {"hash_signal": round(peak_rss_mib())}
    read_seconds = []

    def read():  # as the asset hands `score_images` a reader: called after the pHash search
        begun = time.perf_counter()
        vectors = LanceDBResource(uri=uri).read_content_vectors(MODEL, set(keys))
        read_seconds.append(time.perf_counter() - begun)
        return vectors

    neighbors = find_content_neighbors(read, radius=RADIUS, hash_signal=signal, engine=engine)
    searched = time.perf_counter()
    peaks["search"] = round(peak_rss_mib())
    images = pd.DataFrame({"image_id": keys, "path": [f"{key}.jpg" for key in keys], "pixel_hash": keys})
    scores = compute_uniqueness_scores(images, neighbors, pd.Series(np.arange(rows), index=keys), Thresholds())
    scored = time.perf_counter()
    figures = {
        "engine": {signal_name: f"{u.mode} ({u.reason})" for signal_name, u in neighbors.updates.items()},
        "rows": rows,
        "read_seconds": round(read_seconds[0], 1),
        "hash_signal_seconds": round(prepared - started, 1),
        "search_seconds": round(searched - prepared - read_seconds[0], 1),
        "score_seconds": round(scored - searched, 1),
        "total_seconds": round(scored - started, 1),
        "labels": scores["label"].value_counts().to_dict(),
        "pairs": int(len(neighbors.pairs)),
        "peak_rss_mib": round(peak_rss_mib()),
        "peak_rss_mib_after": peaks,
        "import_rss_mib": round(baseline),
    }
    # Exact fused nearest distance of the sampled contents that have no identical copy (their
    # nearest is then simply the nearest other content): cosine over all rows, and pHash bits
    # mapped where the hash vouches for the pair (SPEC.md: within its cutoff, both informative).
    informative = informative_phashes(phashes)
    sample = sample_rows(rows, queries)
    singleton = np.bincount(neighbors.identical_group, minlength=rows)[neighbors.identical_group[sample]] == 1
    sample = sample[singleton]
    matrix = LanceDBResource(uri=uri).read_content_vectors(MODEL, set(keys)).matrix  # read again, after the stage
    exact = np.empty(len(sample))
    for start in range(0, len(sample), 64):
        rows_here = sample[start : start + 64]
        cosine = cosine_distance(matrix[rows_here] @ matrix.T)
        bits = hamming_distances_of_rows(phashes, rows_here)
        vouched = (bits <= HASH_BITS) & informative[None, :] & informative[rows_here, None]
        fused = np.minimum(cosine, np.where(vouched, bits * signal.bits_to_cosine(RADIUS), np.inf))
        fused[np.arange(len(rows_here)), rows_here] = np.inf
        exact[start : start + 64] = fused.min(axis=1)
    found = neighbors.nearest_distance[sample].astype(np.float64)
    close = exact <= RADIUS
    figures.update(
        sampled_contents=int(len(sample)),
        nearest_equal_fraction=round(float(np.mean(np.abs(found - exact) <= 1e-6)), 4),
        nearest_equal_fraction_within_radius=round(float(np.mean(np.abs(found[close] - exact[close]) <= 1e-6)), 4)
        if close.any()
        else None,
        sampled_within_radius=int(close.sum()),
        nearest_never_below_exact=bool((found >= exact - 1e-6).all()),
        labels_equal_fraction=round(float(np.mean((found <= RADIUS) == close)), 4),
    )
    return figures


def run_lancedb(uri: str, rows: int, queries: int) -> dict:
    """LanceDB's own indexes with its batched (multi-vector) search, on a sample of rows."""
    import lancedb

    from imgdedup_pipeline.core.search.ivf import IvfParameters

    table = lancedb.connect(uri).open_table(TABLE)
    count = table.count_rows()
    params = IvfParameters().for_rows(count, DIMENSIONS, NEIGHBORS)
    sample = sample_rows(count, queries)
    truth = exact_for_sample(table, sample, NEIGHBORS, RADIUS)
    figures = {"engine": "lancedb", "rows": count, "queries": len(sample)}
    refine = math.ceil(params.rerank / (NEIGHBORS + 1))  # the same re-rank depth as faiss' run
    configs = (
        # Given more than our index gets (4x the probes, 2x the re-rank depth): LanceDB has no
        # graph refinement, so this is what it needs to come near the same recall.
        (
            "IVF_PQ",
            {"num_partitions": params.nlist, "num_sub_vectors": DIMENSIONS // 8},
            {"nprobes": 4 * params.nprobe, "refine_factor": 2 * refine},
        ),
        (
            "IVF_HNSW_SQ",
            {"num_partitions": max(1, params.nlist // 16)},
            {"nprobes": max(1, params.nlist // 64), "ef": 4 * params.rerank},
        ),
    )
    for index_type, build_options, query_options in configs:
        started = time.perf_counter()
        table.create_index(
            metric="cosine", vector_column_name="vector", index_type=index_type, replace=True, **build_options
        )
        built = time.perf_counter()
        found_index = np.full((len(sample), NEIGHBORS), -1, np.int64)
        found_distance = np.full((len(sample), NEIGHBORS), np.inf, np.float32)
        batch = 100
        for start in range(0, len(sample), batch):
            vectors = truth["queries"][start : start + batch]
            query = table.search(list(vectors)).metric("cosine").limit(NEIGHBORS + 1).nprobes(query_options["nprobes"])
            if "refine_factor" in query_options:
                query = query.refine_factor(query_options["refine_factor"])
            if "ef" in query_options:
                query = query.ef(query_options["ef"])
            hits = query.select(["pixel_hash", "_distance"]).to_arrow().to_pandas()
            hits["row"] = [int(h, 16) for h in hits["pixel_hash"]]  # key_for(row) is the row in hex
            for q, group in hits.groupby("query_index"):
                row = sample[start + q]
                other = group[group["row"].to_numpy() != row].sort_values(["_distance", "row"]).head(NEIGHBORS)
                found_index[start + q, : len(other)] = other["row"].to_numpy()
                found_distance[start + q, : len(other)] = np.clip(other["_distance"].to_numpy(), 0.0, 2.0)
        query_seconds = time.perf_counter() - built
        entry = {
            "build_seconds": round(built - started, 1),
            "build_options": build_options,
            "query_options": query_options,
            "query_seconds": round(query_seconds, 2),
            "ms_per_query": round(1000 * query_seconds / len(sample), 2),
            "all_rows_extrapolated_seconds": round(query_seconds / len(sample) * count, 0),
        }
        entry["total_extrapolated_seconds"] = round(entry["build_seconds"] + entry["all_rows_extrapolated_seconds"], 0)
        # LanceDB's _distance is approximate for HNSW_SQ: judge both engines by exact float32
        # distances of the neighbours they name.
        exact = exact_distances(table, truth["queries"], found_index)
        named = found_index >= 0
        entry["lancedb_distance_max_error"] = (
            float(np.abs(found_distance[named] - exact[named]).max()) if named.any() else None
        )
        entry.update(recall_figures(sample, truth, found_index, exact, None))
        figures[index_type] = entry
    figures["peak_rss_mib"] = round(peak_rss_mib())
    return figures


def child(step: str, uri: str, rows: int, queries: int, stage_engine: str = "auto") -> dict:
    process = subprocess.run(
        [
            sys.executable,
            __file__,
            "--step",
            step,
            "--uri",
            uri,
            "--rows",
            str(rows),
            "--queries",
            str(queries),
            "--stage-engine",
            stage_engine,
        ],
        capture_output=True,
        text=True,
    )
    if process.returncode:
        raise RuntimeError(f"step {step} at {rows} rows failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_index_sizes(
    sizes: list[int],
    queries: int = 1000,
    lancedb_max_rows: int = 100_000,
    lancedb_queries: int = 1000,
    workdir: Path | None = None,
    exact_max_rows: int = 100_000,
    skip: list[str] = (),
    stage_engine: str = "auto",
) -> dict:
    """Every figure for every size (each step in its own subprocess), and the growth exponents."""
    figures: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory(dir=workdir) as directory:
        for rows in sizes:
            uri = str(Path(directory) / f"db_{rows}")
            entry = {"write": child("write", uri, rows, queries)}
            print(
                f"index {rows:>9,d} rows: wrote the LanceDB table in {entry['write']['seconds']} s (peak RSS {entry['write']['peak_rss_mib']} MiB)",
                flush=True,
            )
            if "stage" not in skip:
                entry["stage"] = child("stage", uri, rows, queries, stage_engine)
                g = entry["stage"]
                print(
                    f"stage {rows:>9,d} rows: scoring stage ({g['engine']}) total {g['total_seconds']} s (read {g['read_seconds']}, "
                    f"hash signal {g['hash_signal_seconds']}, search {g['search_seconds']}, score {g['score_seconds']}), peak RSS {g['peak_rss_mib']} MiB; "
                    f"sampled nearest distance equal to exact: {g['nearest_equal_fraction']} ({g['nearest_equal_fraction_within_radius']} of "
                    f"{g['sampled_within_radius']} within the radius), never below exact: {g['nearest_never_below_exact']}, labels equal {g['labels_equal_fraction']}",
                    flush=True,
                )
            if "faiss" in skip:
                figures["sizes"][str(rows)] = entry
                shutil_rmtree(uri)
                continue
            entry["faiss"] = child("faiss", uri, rows, queries)
            f = entry["faiss"]
            print(
                f"index {rows:>9,d} rows: faiss total {f['total_seconds']} s (read {f['read_seconds']}, "
                f"build + search + re-rank {f['search_seconds']}), recall@1 {f['recall_at_1']} (strict {f['recall_at_1_strict']}), "
                f"recall@{NEIGHBORS} {f[f'recall_at_{NEIGHBORS}']}, close-pair recall {f.get('close_pair_recall')}, peak RSS {f['peak_rss_mib']} MiB",
                flush=True,
            )
            if rows <= exact_max_rows and "exact" not in skip:
                entry["exact"] = child("exact", uri, rows, queries)
                e = entry["exact"]
                print(
                    f"index {rows:>9,d} rows: exact search_neighbors {e['total_seconds']} s (read {e['read_seconds']}), peak RSS {e['peak_rss_mib']} MiB",
                    flush=True,
                )
            if rows <= lancedb_max_rows and "lancedb" not in skip:
                entry["lancedb"] = child("lancedb", uri, rows, lancedb_queries)
                for name in ("IVF_PQ", "IVF_HNSW_SQ"):
                    e = entry["lancedb"][name]
                    print(
                        f"index {rows:>9,d} rows: lancedb {name} build {e['build_seconds']} s, {e['ms_per_query']} ms/query batched, "
                        f"all rows ~{e['all_rows_extrapolated_seconds']:,.0f} s, recall@1 {e['recall_at_1']}, "
                        f"faiss faster by {e['total_extrapolated_seconds'] / max(f['total_seconds'], 1e-9):,.0f}x",
                        flush=True,
                    )
            figures["sizes"][str(rows)] = entry
            shutil_rmtree(uri)
    measured = sorted(int(r) for r in figures["sizes"] if "faiss" in figures["sizes"][r])
    if len(measured) >= 2:
        growth = {}
        for small, large in zip(measured, measured[1:]):
            ratio = (
                figures["sizes"][str(large)]["faiss"]["total_seconds"]
                / figures["sizes"][str(small)]["faiss"]["total_seconds"]
            )
            growth[f"{small}->{large}"] = round(math.log(ratio) / math.log(large / small), 2)
        figures["faiss_time_growth_exponent"] = growth
        print(f"faiss time grows as N^x with x = {growth}", flush=True)
    return figures


def shutil_rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000, help="sampled rows checked against exact search")
    parser.add_argument(
        "--lancedb-max-rows", type=int, default=100_000, help="largest N also run with LanceDB's own index"
    )
    parser.add_argument("--lancedb-queries", type=int, default=1000)
    parser.add_argument(
        "--exact-max-rows",
        type=int,
        default=100_000,
        help="largest N also run with the exact search (core.search.exact_cosine)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the temporary LanceDB tables go (default: the system temp dir)"
    )
    parser.add_argument(
        "--stage-engine", default="auto", choices=["auto", "exact", "index"], help="--neighbor-search of the stage step"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["faiss", "exact", "lancedb", "stage"], help="steps not to run"
    )
    parser.add_argument("--step", choices=["write", "faiss", "exact", "lancedb", "stage"], help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        if args.step == "stage":
            print(json.dumps(run_stage(args.uri, args.rows[0], args.queries, args.stage_engine)))
            return 0
        run = {"write": write_table, "faiss": run_faiss, "exact": run_exact, "lancedb": run_lancedb}[args.step]
        print(
            json.dumps(
                run(args.uri, args.rows[0]) if args.step == "write" else run(args.uri, args.rows[0], args.queries)
            )
        )
        return 0
    figures = run_index_sizes(
        args.rows,
        args.queries,
        args.lancedb_max_rows,
        args.lancedb_queries,
        args.workdir,
        args.exact_max_rows,
        args.skip,
        args.stage_engine,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

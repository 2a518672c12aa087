"""The sub-quadratic pHash search (`core.search.mih.search_hash_neighbors_within`) at 10k-1M rows.

Usage:
    .venv/bin/python bench/hash_index.py [--rows 10000 100000 1000000] [--radius 10] [--k 16]
                                         [--exact-max-rows 10000] [--workers N] [--seed 1]

Synthetic hashes, per N:
  * N random 64-bit identity hashes; the 8 variants of a hash are the dihedral permutations of its
    bits read as an 8 x 8 grid (identity, rotations by 90/180/270, flips, transpose, transverse:
    `DIHEDRAL`), as pHash bits move when its 32 x 32 input is transposed. (Real pHashes of flipped
    images are not exact permutations; random-looking variants cost the index the same.)
  * 5 % of rows are near copies of a random row: half of them of a rotated / flipped version of it
    (so the copy's identity is near one of the original's variants), each with 0..12 random bits
    flipped; their own variants are computed from their identity in the same way.
  * 4 dense clusters of 250 rows each: a centre with 0..4 bits flipped per member (every pair of a
    cluster within 8 bits), the first 25 of them exact duplicates of the centre.

Each N runs in its own subprocess, so that its peak RSS (resource.getrusage) is its own; the RSS
just before the search (hashes generated, /proc/self/status) is reported too, and the search's
extra memory as peak minus that.
Up to --exact-max-rows, the exact O(N^2) `search_hash_neighbors` runs on the same hashes: its time,
and whether the pairs are equal and the top-k agree within the radius (entry by entry, except
that the exact search may pick other rows among ties at the k-th distance). Prints one line per
figure and ends with one line of JSON holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

COPY_FRACTION = 0.05
MAX_COPY_BITS = 12
CLUSTERS, CLUSTER_ROWS, CLUSTER_BITS, CLUSTER_DUPLICATES = 4, 250, 4, 25


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory now (the peak so far also holds the generator's freed temporaries)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def dihedral_permutations() -> np.ndarray:
    """(8, 64): variant v's bit p is bit DIHEDRAL[v, p] of the identity (bits as an 8 x 8 grid,
    row-major from the least significant bit), identity first."""
    grid = np.arange(64).reshape(8, 8)
    views = [
        grid,
        np.rot90(grid, 1),
        np.rot90(grid, 2),
        np.rot90(grid, 3),
        grid[:, ::-1],
        grid[::-1, :],
        grid.T,
        np.rot90(grid, 2).T,
    ]
    return np.array([view.reshape(-1) for view in views])


DIHEDRAL = dihedral_permutations()


def variants_of(identity: np.ndarray) -> np.ndarray:
    """(n, 8) uint64: the dihedral permutations of each identity's bits."""
    bits = np.unpackbits(identity.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    out = np.empty((len(identity), len(DIHEDRAL)), np.uint64)
    for variant, permutation in enumerate(DIHEDRAL):
        packed = np.ascontiguousarray(np.packbits(bits[:, permutation], axis=1, bitorder="little"))
        out[:, variant] = packed.view("<u8").ravel()
    return out


def random_flips(rng, count: int, max_bits: int) -> np.ndarray:
    """(count,) uint64 masks with 0..max_bits distinct random bits set each."""
    weights = rng.integers(0, max_bits + 1, count)
    keys = rng.random((count, 64))
    chosen = np.argsort(keys, axis=1) < weights[:, None]  # a random subset of the wanted size
    return (chosen.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def synthetic_hashes(rows: int, seed: int = 1) -> np.ndarray:
    """(rows, 8) uint64 as described in the module docstring."""
    rng = np.random.default_rng(seed)
    identity = rng.integers(0, 2**64, rows, dtype=np.uint64, endpoint=False)
    copies = rng.choice(rows, int(rows * COPY_FRACTION), replace=False)
    sources = rng.integers(0, rows, len(copies))
    turned = variants_of(identity[sources])[
        np.arange(len(copies)), np.where(rng.random(len(copies)) < 0.5, rng.integers(1, 8, len(copies)), 0)
    ]
    identity[copies] = turned ^ random_flips(rng, len(copies), MAX_COPY_BITS)
    for _cluster in range(CLUSTERS if rows >= 10 * CLUSTERS * CLUSTER_ROWS else 0):
        members = rng.choice(rows, CLUSTER_ROWS, replace=False)
        identity[members] = identity[members[0]] ^ random_flips(rng, CLUSTER_ROWS, CLUSTER_BITS)
        identity[members[:CLUSTER_DUPLICATES]] = identity[members[0]]
    return variants_of(identity)


def agree(got, exact, radius: float) -> dict:
    """Pairs equal; top-k equal to the exact search's within the radius (rows at the k-th
    distance of a row with k neighbours within the radius: distances only)."""
    pairs = all(
        np.array_equal(getattr(got, f), getattr(exact, f)) for f in ("pair_left", "pair_right", "pair_distance")
    )
    within = exact.topk_distance <= radius
    distances = np.array_equal(got.topk_distance, np.where(within, exact.topk_distance, np.float32(np.inf)))
    full = within.all(axis=1, keepdims=True)  # k neighbours within the radius: ties at the k-th are free
    tied = full & (exact.topk_distance == exact.topk_distance[:, -1:])
    rows = np.array_equal(np.where(within & ~tied, got.topk_index, -2), np.where(within & ~tied, exact.topk_index, -2))
    return {"pairs_equal": pairs, "topk_distances_equal": distances, "topk_rows_equal": rows}


def run_one(rows: int, radius: float, k: int, exact_max_rows: int, workers: int | None, seed: int) -> dict:
    from imgdedup_pipeline.core.search.exact_hamming import search_hash_neighbors
    from imgdedup_pipeline.core.search.mih_plan import plan_substrings
    from imgdedup_pipeline.core.search.signals import hash_pairs_within

    started = time.perf_counter()
    hashes = synthetic_hashes(rows, seed)
    result = {
        "rows": rows,
        "generate_s": round(time.perf_counter() - started, 2),
        "rss_before_search_mib": round(current_rss_mib(), 1),
    }
    plan = plan_substrings(rows, hashes.shape[1], int(radius))
    result["plan"] = "exact" if plan is None else " ".join(f"{s.bits}b/r{s.radius}/s{s.slots}" for s in plan)
    result["workers"] = workers if workers is not None else min(8, os.cpu_count() or 1)
    started = time.perf_counter()
    got, _ = hash_pairs_within(hashes, k, int(radius), workers=workers)  # the engine the hash signal takes
    result["index_s"] = round(time.perf_counter() - started, 2)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["search_extra_rss_mib"] = round(result["peak_rss_mib"] - result["rss_before_search_mib"], 1)
    result["pairs"] = int(len(got.pair_left))
    result["rows_with_a_neighbour"] = int((got.topk_index[:, 0] >= 0).sum()) if got.topk_index.shape[1] else 0
    if rows <= exact_max_rows:
        started = time.perf_counter()
        exact = search_hash_neighbors(hashes, k, radius)
        result["exact_s"] = round(time.perf_counter() - started, 2)
        result.update(agree(got, exact, radius))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--radius", type=float, default=10)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--exact-max-rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.rows[0], args.radius, args.k, args.exact_max_rows, args.workers, args.seed)))
        return
    figures = {"radius_bits": args.radius, "k": args.k, "variants": "dihedral bit permutations", "sizes": []}
    for rows in args.rows:
        command = [
            sys.executable,
            __file__,
            "--one",
            "--rows",
            str(rows),
            "--radius",
            str(args.radius),
            "--k",
            str(args.k),
            "--exact-max-rows",
            str(args.exact_max_rows),
            "--seed",
            str(args.seed),
        ]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"rows={rows} failed:\n{child.stderr}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        figures["sizes"].append(result)
        for name, value in result.items():
            if name != "rows":
                print(f"rows={rows} {name}={value}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

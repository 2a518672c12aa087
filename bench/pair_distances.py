"""The cosine distances of a search's close pairs (`core.search.exact_cosine.cosine_pair_distances`)
gathered in blocks of rows against all pairs at once, each way in a fresh process (the cost being
measured is the fresh memory a first call pages in, as in a run's scoring step).

Usage:
    .venv/bin/python bench/pair_distances.py [--rows 4119] [--dims 1296] [--pairs 50824] [--repeats 3]

Defaults: the size of `bench/whole_run.py --images 10000`'s scoring step (4,119 contents of the
offline backbone's 1296-d vectors, 50,824 candidate pairs). Prints seconds per way and repeat and
whether the answers are bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time


def one_call(rows: int, dims: int, pairs: int, block: int) -> None:
    import numpy as np

    import imgdedup_pipeline.core.search.exact_cosine as exact_cosine

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    left, right = np.sort(rng.integers(0, rows, pairs)), rng.integers(0, rows, pairs)
    exact_cosine.PAIR_BLOCK = block
    started = time.perf_counter()
    distances = exact_cosine.cosine_pair_distances(vectors, left, right)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "digest": hashlib.sha256(distances.tobytes()).hexdigest()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4119)
    parser.add_argument("--dims", type=int, default=1296)
    parser.add_argument("--pairs", type=int, default=50824)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one-call", type=int, help=argparse.SUPPRESS)  # the block size, in a child
    args = parser.parse_args()
    if args.one_call:
        one_call(args.rows, args.dims, args.pairs, args.one_call)
        return 0
    from imgdedup_pipeline.core.search.exact_cosine import PAIR_BLOCK

    ways = {f"blocks of {PAIR_BLOCK}": PAIR_BLOCK, "all pairs at once": args.pairs}
    digests = set()
    for repeat in range(args.repeats):
        for name, block in ways.items():
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rows",
                    str(args.rows),
                    "--dims",
                    str(args.dims),
                    "--pairs",
                    str(args.pairs),
                    "--one-call",
                    str(block),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            digests.add(figures["digest"])
            print(f"repeat {repeat + 1}  {name:>20}: {figures['seconds']:.3f} s")
    print("answers bit-identical" if len(digests) == 1 else "answers DIFFER")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

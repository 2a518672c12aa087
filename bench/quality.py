"""Dedup quality on the shared benchmark sets: run `imgdedup run` on each, score with evaluate.py.

Usage:
    .venv/bin/python bench/quality.py [--embedder offline] [--out /tmp/imgdedup-bench]

Prints one line per set and ends with one line of JSON holding every figure.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH = PROJECT_ROOT.parent / "shared" / "bench"
SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="offline")
    parser.add_argument("--out", default="/tmp/imgdedup-bench")
    args = parser.parse_args()
    figures = {}
    for name in SETS:
        out = Path(args.out) / name
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "cli", "run", "--images", str(BENCH / "data" / name), "--out", str(out), "--embedder", args.embedder, "--max-duplicate-fraction", "1.0"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if run.returncode not in (0, 1):
            print(run.stderr[-2000:], file=sys.stderr)
            return run.returncode
        scored = subprocess.run([sys.executable, str(BENCH / "evaluate.py"), str(out / "uniqueness.csv"), str(BENCH / "data" / name), "--json"],
                                capture_output=True, text=True, check=True)
        result = json.loads(scored.stdout)
        figures[name] = {k: result[k] for k in ("images_scored", "images_missing", "pair_precision", "pair_recall", "pair_f1", "groups_left_with_exactly_one", "groups_with_copies", "singletons_removed")}
        figures[name]["seconds"] = round(seconds, 1)
        print(f"{name:22s} P {result['pair_precision']:.3f}  R {result['pair_recall']:.3f}  F1 {result['pair_f1']:.3f}  "
              f"missing {result['images_missing']}  ({seconds:.1f} s, incl. model load)")
    print(json.dumps({"embedder": args.embedder, "sets": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resident memory per phase of the scoring stage (BENCHMARKS.md, "Memory at 1M").

Usage:
    .venv/bin/python bench/scoring_index.py --step write --uri DIR --rows 1000000   # the table, once
    .venv/bin/python bench/stage_memory.py DIR 1000000 [--stage-engine auto|exact|index]

Runs `bench/scoring_index.py`'s stage step (`run_stage`) in this process while a thread samples
the RSS (/proc/self/statm) every 5 ms; the stage's functions are wrapped so that each sample is
booked to the phase running then (the read, the index's steps, the pHash matrix and search, the
merge, the nearest row outside a group, the scores). Prints the stage's JSON line, then one line
per phase: RSS at its start and its peak (MiB). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scoring_index

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class PhaseSampler:
    """RSS samples booked to the phase that runs when they are taken."""

    def __init__(self):
        self.phase = "imports"
        self.start_and_peak: dict[str, list[float]] = {}

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES / 2**20

    def book(self, phase: str | None = None) -> None:
        if phase is not None:
            self.phase = phase
        rss = self.rss_mib()
        start_and_peak = self.start_and_peak.setdefault(self.phase, [rss, rss])
        start_and_peak[1] = max(start_and_peak[1], rss)

    def run(self) -> None:
        while True:
            self.book()
            time.sleep(0.005)

    def wrap(self, owner, name: str, phase: str) -> None:
        """Book the time spent in `owner.name` to `phase`, then back to the caller's phase."""
        original = getattr(owner, name)
        calls = []

        def wrapped(*args, **kwargs):
            caller = self.phase
            calls.append(1)
            self.book(phase if len(calls) == 1 else f"{phase}, call {len(calls)}")
            try:
                return original(*args, **kwargs)
            finally:
                self.book(caller if caller.endswith(" (rest)") else f"{caller} (rest)")

        setattr(owner, name, wrapped)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("uri", help="the LanceDB directory written by scoring_index.py --step write")
    parser.add_argument("rows", type=int)
    parser.add_argument("--stage-engine", default="auto", choices=["auto", "exact", "index"])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    sampler = PhaseSampler()
    threading.Thread(target=sampler.run, daemon=True).start()

    import scoring_index

    import imgdedup_pipeline.core.scoring as scoring
    import imgdedup_pipeline.core.search.contents as contents
    import imgdedup_pipeline.core.search.ivf as ivf
    import imgdedup_pipeline.core.search.signals as signals
    from imgdedup_pipeline.resources import lancedb

    sampler.wrap(lancedb.LanceDBResource, "read_content_vectors", "read_content_vectors")
    sampler.wrap(signals.HashSignal, "matrix", "pHash matrix")
    sampler.wrap(signals.HashSignal, "vouched_pairs", "pHash search")
    for step in ("_train_centroids", "_assign", "_build_index", "_search", "_refine", "_scan_dense_rows", "result"):
        sampler.wrap(ivf._Search, step, f"index {step.strip('_')}")
    for name in ("merge_searches", "nearest_outside_group", "identical_groups", "find_content_neighbors"):
        sampler.wrap(contents, name, name)
    sampler.wrap(scoring, "compute_uniqueness_scores", "compute_uniqueness_scores")
    sampler.book("bench (keys, pHashes, the check after the stage)")
    figures = scoring_index.run_stage(args.uri, args.rows, args.queries, args.stage_engine)
    print(json.dumps({key: value for key, value in figures.items() if key != "labels"}))
    print(f"{'phase':58s} {'start':>7s} {'peak':>7s}  MiB RSS")
    for phase, (start, peak) in sampler.start_and_peak.items():
        print(f"{phase:58s} {start:7.0f} {peak:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the embedding stage's time goes (issue 14 item 2): decode vs model, in one process.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/embedding_breakdown.py [--images 192] [--repeats 3] [--batch 32]

On `--images` distinct 1280x960 JPEGs on disk (bench/runtimes.py's stage photos) and the offline
backbone under the pipeline's default runtime (`auto`), images/s of, medians of `--repeats`
round-robin rounds after one warm-up:
  * decode as the embedding step does it (read, SHA-256 checked, draft decode at the model's
    size, border trim) in 1 thread and in the stage's 2 threads; the catalog's full decode for
    comparison;
  * `embed()` on already-decoded images (padding, normalisation, forward) and the forward alone;
  * the stage itself (`embed_in_batches`: decode in 2 threads overlapped with the model) and the
    same with decoding in series with the model (`decode_workers=0`);
  * the catalog's per-file work (`describe_image`: full decode, pixel hash, content pixels,
    pHashes; 1 thread), and the same with the content box computed twice, as before commit
    5af01aa (once for the content-pixel count, once for the pHashes' trim).
Prints one line per figure and ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

from runtimes import stage_files  # noqa: E402

from imgdedup_pipeline.core.embedders import build_embedder, embed_in_batches  # noqa: E402
from imgdedup_pipeline.core.images import (  # noqa: E402
    content_pixel_count,
    describe_image,
    dihedral_phashes,
    file_sha256,
    load_rgb,
    load_verified_rgb,
    open_image,
    pixel_hash,
    trim_uniform_borders,
)


def describe_with_two_trims(path) -> tuple:
    """`describe_image` as it was before the content box was shared (same results)."""
    with open_image(path) as probe:
        mode, frames = probe.mode, getattr(probe, "n_frames", 1)
    rgb = load_rgb(path)
    return (
        rgb.size,
        pixel_hash(rgb),
        content_pixel_count(rgb),
        mode,
        frames,
        tuple(dihedral_phashes(rgb).view("int64").tolist()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgdedup-bench-embedding-breakdown-") as scratch:
        files = stage_files(Path(scratch) / "photos", args.images)
        embedder = build_embedder("offline", runtime="auto", export_dir=Path(scratch) / "exported-models")
        draft = (embedder.input_size, embedder.input_size)
        sha = {path: file_sha256(path) for path in files.values()}
        paths = sorted(files.values())

        def decode(path):
            return trim_uniform_borders(load_verified_rgb(path, sha[path], draft_size=draft))

        def load(path, size):
            return load_verified_rgb(path, sha[path], draft_size=size)

        decoded = [decode(path) for path in paths]
        batches = [decoded[start : start + args.batch] for start in range(0, len(decoded), args.batch)]
        pixels = embedder.preprocess(batches[0]) if hasattr(embedder, "preprocess") else None
        pool = ThreadPoolExecutor(max_workers=2)
        calls = {
            "decode_1_thread": (lambda: [decode(p) for p in paths], len(paths)),
            "decode_2_threads": (lambda: list(pool.map(decode, paths)), len(paths)),
            "full_decode_2_threads": (lambda: list(pool.map(lambda p: load_rgb(p), paths)), len(paths)),
            "embed_decoded": (lambda: [embedder.embed(batch) for batch in batches], len(paths)),
            "stage_overlapped": (lambda: list(embed_in_batches(files, embedder, load, args.batch)), len(paths)),
            "stage_serial": (
                lambda: list(embed_in_batches(files, embedder, load, args.batch, decode_workers=0)),
                len(paths),
            ),
            "catalog_describe_1_thread": (lambda: [describe_image(p) for p in paths], len(paths)),
            "catalog_describe_two_trims_1_thread": (lambda: [describe_with_two_trims(p) for p in paths], len(paths)),
        }
        if pixels is not None:
            calls["forward"] = (lambda: [embedder._features(pixels) for _ in batches], len(batches) * len(batches[0]))
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for call, _ in calls.values():  # warm-up: export and compile, page cache
            call()
        for _ in range(args.repeats):
            for name, (call, items) in calls.items():
                started = time.perf_counter()
                call()
                rates[name].append(items / (time.perf_counter() - started))
        pool.shutdown()
        figures = {name: round(statistics.median(values), 1) for name, values in rates.items()}
        figures.update(
            runtime=embedder.runtime_in_use, images=args.images, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")
        )
        for name, values in rates.items():
            print(f"{name:36} {statistics.median(values):7.1f} img/s", flush=True)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

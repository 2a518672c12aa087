"""The catalog's per-file work with the turned-corner test's Hough peaks found by scikit-image's
`hough_line_peaks` and by `core.rotated_copies.hough_line_peaks` (equal answers, tested), the two
alternating in one process.

Usage:
    .venv/bin/python bench/hough_peaks.py FOLDER [--files 1500] [--rounds 3]

FOLDER: images to describe, e.g. the `images` folder `bench/whole_run.py` leaves in its `--work`
folder. Prints ms per file for each round and way.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import skimage.transform

    import imgdedup_pipeline.core.rotated_copies as rotated_copies
    from imgdedup_pipeline.core.images import IMAGE_EXTENSIONS, describe_image, import_decoding_modules

    import_decoding_modules()
    files = sorted(path for path in args.folder.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS)
    random.Random(0).shuffle(files)
    contents = [(path, path.read_bytes()) for path in files[: args.files]]
    ways = {"scikit-image": skimage.transform.hough_line_peaks, "core.rotated_copies": rotated_copies.hough_line_peaks}
    for _ in range(args.rounds):
        for name, peaks in ways.items():
            rotated_copies.hough_line_peaks = peaks
            started = time.perf_counter()
            for path, data in contents:
                describe_image(path, data=data)
            print(f"{name:20s} {(time.perf_counter() - started) / len(contents) * 1000:.3f} ms per file", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

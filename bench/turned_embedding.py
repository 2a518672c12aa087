"""Would the embedding of the correspondingly turned image tell a true pHash-only match from a
false one? (Issue 16, item 3: an idea measured before building it.)

For every pair of images in a set whose dihedral pHashes are both informative and within the
cutoff, but whose embedding uniqueness lies above the near-duplicate threshold (the pairs only the
hash decides), one member is turned by the dihedral variant that matched and embedded again; its
uniqueness-scale distance to the other member is reported, for true pairs (same ground-truth
group) and false ones.

Usage:
    .venv/bin/python bench/turned_embedding.py [--embedder offline] [--hard-negatives DIR]

DIR: a set written by `bench/hard_negatives.py` (default: generated with seed 0 in a temporary
folder). Prints one line per set and a JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
BENCH = PROJECT_ROOT.parent / "shared" / "bench"
SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")
CUTOFF_BITS = 10
NEAR_DUPLICATE = 0.05


def turned_distances(data: Path, embedder) -> dict:
    from imgdedup_pipeline.core.images import (
        DIHEDRAL_TRANSPOSES,
        ImageRejected,
        dihedral_phashes,
        discover_image_files,
        informative_phashes,
        load_rgb,
        trim_uniform_borders,
    )
    from imgdedup_pipeline.core.search.result import l2_normalize

    groups = json.loads((data / "groups.json").read_text())
    truth = {path: group for group, members in groups.items() for path in members}
    images, hashes = {}, {}
    for found in discover_image_files(data):
        try:
            rgb = load_rgb(data / found.path)
        except ImageRejected:
            continue
        images[found.path], hashes[found.path] = trim_uniform_borders(rgb), dihedral_phashes(rgb)
    paths = sorted(images)
    vectors = dict(zip(paths, l2_normalize(embedder.embed([images[p] for p in paths]))))
    true, false = [], []
    for a, b in itertools.combinations(paths, 2):
        if not (informative_phashes(hashes[a]) and informative_phashes(hashes[b])):
            continue
        forward = np.bitwise_count(hashes[a][0] ^ hashes[b])  # a against b's variants
        backward = np.bitwise_count(hashes[b][0] ^ hashes[a])
        if min(forward.min(), backward.min()) > CUTOFF_BITS or (1.0 - vectors[a] @ vectors[b]) / 2.0 <= NEAR_DUPLICATE:
            continue
        # H(id_a, variant v of b) small: a looks like b turned by transpose v (and the reverse).
        anchor, moved, variant = (
            (a, b, int(forward.argmin())) if forward.min() <= backward.min() else (b, a, int(backward.argmin()))
        )
        turned = images[moved] if variant == 0 else images[moved].transpose(DIHEDRAL_TRANSPOSES[variant])
        distance = float((1.0 - vectors[anchor] @ l2_normalize(embedder.embed([turned]))[0]) / 2.0)
        (true if a in truth and truth.get(a) == truth.get(b) else false).append(round(distance, 3))
    return {
        "true_pairs": len(true),
        "true_max": max(true, default=None),
        "false_pairs": len(false),
        "false": sorted(false),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="offline")
    parser.add_argument("--hard-negatives", type=Path, default=None)
    args = parser.parse_args()
    from bench.hard_negatives import write_hard_negatives
    from imgdedup_pipeline.core.embedders import build_embedder

    embedder = build_embedder(args.embedder)
    with tempfile.TemporaryDirectory() as scratch:
        hard_negatives = args.hard_negatives
        if hard_negatives is None:
            hard_negatives = Path(scratch) / "hard-negatives-seed0"
            write_hard_negatives(hard_negatives, 0)
        figures = {name: turned_distances(BENCH / "data" / name, embedder) for name in SETS}
        figures["hard-negatives"] = turned_distances(hard_negatives, embedder)
    for name, row in figures.items():
        print(
            f"{name:22s} true pairs {row['true_pairs']:4d} (turned distance max {row['true_max']})  false pairs {row['false_pairs']:3d}: {row['false']}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

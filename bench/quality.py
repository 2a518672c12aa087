"""Dedup quality on the shared benchmark sets and on the generated hard-negative set: run
`imgdedup run` on each, score with evaluate.py, break recall down by relation and false pairs down
by hard-negative category, and measure the cost per 100 images.

Usage:
    .venv/bin/python bench/quality.py [--embedder offline] [--precision fp32|bf16] [--out /tmp/imgdedup-bench]
                                      [--calibrate | --near-duplicate-threshold T] [--no-cost]
                                      [--hard-negative-seed 0] [--edited-copies-seed 0]

The set of missed edits (`bench/edited_copies.py`, written to OUT/edited-copies-data with its seed:
small and arbitrary-angle rotations, off-centre crops, text overlays of scikit-image's photos) is
scored like the shared sets, with its recall by relation.

The hard-negative set (`bench/hard_negatives.py`, written to OUT/hard-negatives-data with the seed)
holds only different pictures: every predicted pair is false, so its P is 1.000 only when nothing
is paired. Per category: P, false pairs, and images wrongly removed.

`--precision` is passed to `imgdedup run` / `calibrate` and to the cost measurement (bf16 is its own
model id, so its own vector table; use a separate `--out` to compare fresh runs).

`--calibrate` runs `imgdedup calibrate` on each set first (the user's flow: the run then uses the
threshold calibrated on that set's own images; a set it refuses is scored at the default threshold
and says so); `--near-duplicate-threshold` pins one value for all
sets. Default: the settings' defaults.

Per-relation recall: a true pair (two images of one ground-truth group) counts for the relation of
its non-original member (`relation` column of the set's manifest.csv, reduced to a category); a pair
of two edited copies counts for both relations, a pair of two originals as "original / identical".

Cost per 100 images: decoding + the 8 dihedral pHashes (as the catalog computes them), one
embedding forward pass per image (the pipeline's loader, border trimming and batches), and the
turned-copy check (core/rotated_copies.py, as scoring runs it at the default radius), timed in this
process after the model has loaded, decoding's libraries have been imported and the check's have
been warmed on one image (those once-per-process costs are reported apart, like the model load),
over every decodable file of the set.

Prints one line per set, the per-relation table, and ends with one line of JSON holding every figure.
"""

import argparse
import csv
import itertools
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
BENCH = PROJECT_ROOT.parent / "shared" / "bench"
SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")
ORIGINAL = "original / identical copy"

# First match wins, on the lower-cased relation text of manifest.csv.
RELATION_CATEGORIES = (
    # bench/edited_copies.py's relations (issue 16: the edits still missed).
    (r"^small rotation, black corners", "small rotation 1-10° (black corners)"),
    (r"^small rotation, inner crop", "small rotation 1-10° (inner crop)"),
    (r"^arbitrary rotation, black corners", "arbitrary-angle rotation"),
    (r"^off-centre crop", "off-centre crop 75-85 %"),
    (r"^text overlay", "text overlay 5-10 %"),
    (r"same scene, separate shots", "same scene, separate shot"),
    (r"exif orientation=", "EXIF orientation tag only"),
    (r"byte-identical", ORIGINAL),
    (r"^original|aaa-orig|bridge-1-original|mode original|variant: sample-b$", ORIGINAL),
    (r"rotated 0 deg, flip none", "re-encode"),
    (r"rotated (90|270) deg|rotate-(90|270)|flip-(plus|minus)-1", "rotation 90/270 (± flip)"),
    (r"rotated (0|180) deg|rotate-180|flipx|flipy|hflip", "rotation 180 / flip"),
    (r"transformed copy: rotation", "arbitrary-angle rotation"),
    (r"rgba png copy|convert to mode|gray", "mode conversion / grayscale"),
    (r"letterbox", "letterbox"),
    (r"crop", "crop"),
    (r"copyright", "watermark"),
    (r"resize|shrink|square-|thumb", "resize / thumbnail"),
    (r"blur|sharpen", "blur / sharpen"),
    (r"contrast|saturation", "contrast / saturation"),
    (r"variant: (high|low)$", "JPEG quality"),
)


def relation_category(relation: str) -> str:
    text = relation.lower().strip()
    for pattern, category in RELATION_CATEGORIES:
        if re.search(pattern, text):
            return category
    return "other: " + text[:40]


def category_precision(dataset: Path, uniqueness_csv: Path) -> dict[str, dict]:
    """category -> {predicted_pairs, false_pairs, precision, wrongly_removed} for a set whose
    manifest.csv has a `category` column; a predicted pair across two categories counts under
    "across categories"."""
    groups = json.loads((dataset / "groups.json").read_text())
    truth = {path: group for group, members in groups.items() for path in members}
    with open(dataset / "manifest.csv", newline="") as handle:
        category = {row["path"]: row["category"] for row in csv.DictReader(handle)}
    with open(uniqueness_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_group = defaultdict(list)
    for row in rows:
        if row.get("group_id"):
            by_group[row["group_id"]].append(row["path"])
    table = {
        name: {"predicted_pairs": 0, "false_pairs": 0, "wrongly_removed": 0} for name in sorted(set(category.values()))
    }
    for members in by_group.values():
        for a, b in itertools.combinations(sorted(members), 2):
            name = category[a] if category[a] == category[b] else "across categories"
            entry = table.setdefault(name, {"predicted_pairs": 0, "false_pairs": 0, "wrongly_removed": 0})
            entry["predicted_pairs"] += 1
            entry["false_pairs"] += int(truth[a] != truth[b])
    singletons = {members[0] for members in groups.values() if len(members) == 1}
    for row in rows:
        if row.get("duplicate_of") and row["path"] in singletons:
            table[category[row["path"]]]["wrongly_removed"] += 1
    for entry in table.values():
        predicted = entry["predicted_pairs"]
        entry["precision"] = round((predicted - entry["false_pairs"]) / predicted, 3) if predicted else 1.0
    return table


def relation_recall(dataset: Path, uniqueness_csv: Path) -> dict[str, dict]:
    """category -> {true_pairs, found, recall} for one set (see the module docstring)."""
    groups = json.loads((dataset / "groups.json").read_text())
    with open(dataset / "manifest.csv", newline="") as handle:
        category = {row["path"]: relation_category(row["relation"]) for row in csv.DictReader(handle)}
    with open(uniqueness_csv, newline="") as handle:
        predicted = {row["path"]: row["group_id"] for row in csv.DictReader(handle) if row.get("group_id")}
    table = defaultdict(lambda: {"true_pairs": 0, "found": 0})
    for members in groups.values():
        for a, b in itertools.combinations(sorted(members), 2):
            found = a in predicted and predicted.get(a) == predicted.get(b)
            relations = {category[p] for p in (a, b) if category[p] != ORIGINAL} or {ORIGINAL}
            for relation in relations:
                table[relation]["true_pairs"] += 1
                table[relation]["found"] += int(found)
    return {k: {**v, "recall": round(v["found"] / v["true_pairs"], 3)} for k, v in sorted(table.items())}


def cost_per_100_images(dataset: Path, embedder_name: str, batch_size: int = 32, precision: str = "fp32") -> dict:
    """Seconds per 100 decodable images: decode + dihedral pHashes, and embedding (after warm-up)."""
    from imgdedup_pipeline.core.embedders import build_embedder, embed_in_batches
    from imgdedup_pipeline.core.images import (
        ImageRejected,
        describe_image,
        discover_image_files,
        import_decoding_modules,
        load_rgb,
    )

    # Decoding's libraries load once per process (Pillow's plugins, scipy and scikit-image on first
    # use), in the pipeline before its decoding threads start: timed apart, like the model load,
    # or the first set measured would carry them alone.
    started = time.perf_counter()
    import_decoding_modules()
    decode_warm_up_seconds = time.perf_counter() - started
    paths, turned, started = [], {}, time.perf_counter()
    for found in discover_image_files(dataset):
        try:
            content = describe_image(dataset / found.path)
        except ImageRejected:
            continue
        paths.append((content.pixel_hash, str(dataset / found.path)))
        if content.turned_degrees is not None:  # read from the black corners, as the catalog does
            turned[content.pixel_hash] = content.turned_degrees
    hash_seconds = time.perf_counter() - started
    by_hash = dict(paths)
    embedder = build_embedder(embedder_name, precision=precision)
    embedder.embed([load_rgb(next(iter(by_hash.values())))])  # load the weights outside the timing
    started = time.perf_counter()
    vectors = {}
    for hashes, rows in embed_in_batches(
        by_hash, embedder, lambda path, draft: load_rgb(path, draft_size=draft), batch_size
    ):
        vectors.update(zip(hashes, rows))
    embed_seconds = time.perf_counter() - started
    # The turned-copy check as scoring runs it: contents with turned black corners just beyond the
    # default radius are matched by features against their neighbours.
    from imgdedup_pipeline.core.rotated_copies import RotatedCopySignal
    from imgdedup_pipeline.core.scoring import Thresholds
    from imgdedup_pipeline.core.search.contents import ContentVectors
    from imgdedup_pipeline.core.search.engines import search_neighbors
    from imgdedup_pipeline.core.search.signals import NEIGHBORS_PER_ROW

    content = ContentVectors.from_mapping(vectors)
    radius = Thresholds().near_duplicate_cosine_distance
    search = search_neighbors(content.matrix, k=NEIGHBORS_PER_ROW, radius=radius)
    # Like the model (loaded and run once above), the check's libraries load once per run (scikit-image
    # loads its submodules lazily, on first use): warmed on one turned image, timed apart.
    from imgdedup_pipeline.core.rotated_copies import similarity_match

    started = time.perf_counter()
    sample = load_rgb(next(iter(by_hash.values())))
    similarity_match(sample, sample.rotate(30))
    warm_up_seconds = time.perf_counter() - started
    started = time.perf_counter()
    RotatedCopySignal(
        lambda pixel_hash, draft: load_rgb(by_hash[pixel_hash], draft_size=draft), turned
    ).vouched_matches(content.hashes, search, np.arange(len(content.hashes)), radius)
    turned_seconds = time.perf_counter() - started
    # Identical contents are embedded once; the cost is per image of the set, as a user pays it.
    per_100 = 100.0 / len(paths)
    return {
        "images": len(paths),
        "distinct_contents": len(by_hash),
        "decode_and_hash_s_per_100": round(hash_seconds * per_100, 2),
        "decode_warm_up_s_once": round(decode_warm_up_seconds, 2),
        "embedding_s_per_100": round(embed_seconds * per_100, 2),
        "turned_copy_check_s_per_100": round(turned_seconds * per_100, 2),
        "turned_copy_check_warm_up_s_once": round(warm_up_seconds, 2),
        "total_s_per_100": round((hash_seconds + embed_seconds + turned_seconds) * per_100, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="offline")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="forward-pass precision of the embedder (default fp32)",
    )
    parser.add_argument("--out", default="/tmp/imgdedup-bench")
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument(
        "--calibrate", action="store_true", help="calibrate the threshold on each set before its run"
    )
    threshold.add_argument(
        "--near-duplicate-threshold", type=float, default=None, help="pin one threshold for every set"
    )
    parser.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    parser.add_argument(
        "--hard-negative-seed", type=int, default=0, help="seed of the generated hard-negative set (default 0)"
    )
    parser.add_argument(
        "--edited-copies-seed", type=int, default=0, help="seed of the generated set of missed edits (default 0)"
    )
    args = parser.parse_args()
    from bench.hard_negatives import write_hard_negatives

    hard_negatives = f"hard-negatives-seed{args.hard_negative_seed}"
    hard_negative_data = Path(args.out) / "hard-negatives-data" / hard_negatives
    write_hard_negatives(hard_negative_data, args.hard_negative_seed)
    from bench.edited_copies import write_edited_copies

    edited = f"edited-copies-seed{args.edited_copies_seed}"
    edited_data = Path(args.out) / "edited-copies-data" / edited
    write_edited_copies(edited_data, args.edited_copies_seed)
    datasets = {name: BENCH / "data" / name for name in SETS} | {
        edited: edited_data,
        hard_negatives: hard_negative_data,
    }
    figures = {}
    relations = {}
    categories = {}
    calibration_failures: dict[str, str] = {}
    for name, data in datasets.items():
        out = Path(args.out) / name
        started = time.perf_counter()
        calibrated = None
        if args.calibrate:
            calibration = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "imgdedup_pipeline.cli",
                    "calibrate",
                    "--images",
                    str(data),
                    "--out",
                    str(out),
                    "--embedder",
                    args.embedder,
                    "--precision",
                    args.precision,
                    "--force",
                ],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
            )
            if calibration.returncode != 0:
                # A set calibration refuses (too few or too alike originals) is scored at the
                # default threshold, as `imgdedup run` would be, so that the other sets still run.
                lines = (calibration.stderr + calibration.stdout).splitlines()
                reason = [line for line in lines if "CalibrationError:" in line][-1:] or lines[-1:] or ["no output"]
                print(f"{name}: calibration failed ({reason[0][:300]}); scored at the default threshold")
                calibration_failures[name] = reason[0][:300]
            else:
                calibrated = json.loads((out / "state" / "thresholds.json").read_text())["models"]
        pinned = (
            ["--near-duplicate-threshold", str(args.near_duplicate_threshold)]
            if args.near_duplicate_threshold is not None
            else []
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "imgdedup_pipeline.cli",
                "run",
                "--images",
                str(data),
                "--out",
                str(out),
                "--embedder",
                args.embedder,
                "--precision",
                args.precision,
                "--max-duplicate-fraction",
                "1.0",
                *pinned,
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if run.returncode not in (0, 1):
            print(run.stderr[-2000:], file=sys.stderr)
            return run.returncode
        scored = subprocess.run(
            [sys.executable, str(BENCH / "evaluate.py"), str(out / "uniqueness.csv"), str(data), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(scored.stdout)
        figures[name] = {
            k: result[k]
            for k in (
                "images_scored",
                "images_missing",
                "pair_precision",
                "pair_recall",
                "pair_f1",
                "groups_left_with_exactly_one",
                "groups_with_copies",
                "singletons_removed",
            )
        }
        figures[name]["seconds"] = round(seconds, 1)
        if calibrated:
            figures[name]["calibrated_threshold"] = next(iter(calibrated.values()))["near_duplicate_threshold"]
        elif name in calibration_failures:
            figures[name]["calibration_failed"] = calibration_failures[name]
        if name == hard_negatives:
            categories[name] = category_precision(data, out / "uniqueness.csv")
        else:
            relations[name] = relation_recall(data, out / "uniqueness.csv")
        if not args.no_cost:
            figures[name]["cost"] = cost_per_100_images(data, args.embedder, precision=args.precision)
        cost = f"; {figures[name]['cost']['total_s_per_100']:.1f} s / 100 images" if "cost" in figures[name] else ""
        threshold_note = f"  T {figures[name]['calibrated_threshold']:.4f}" if calibrated else ""
        threshold_note += "  (calibration failed: default T)" if name in calibration_failures else ""
        if "cost" in figures[name]:
            cost += f", of which the turned-copy check {figures[name]['cost']['turned_copy_check_s_per_100']:.2f} s"
        print(
            f"{name:24s} P {result['pair_precision']:.3f}  R {result['pair_recall']:.3f}  F1 {result['pair_f1']:.3f}  "
            f"missing {result['images_missing']}{threshold_note}  ({seconds:.1f} s, incl. model load{cost})"
        )
    print("\nrecall by relation (true pairs found / true pairs):")
    for name, table in relations.items():
        for relation, row in table.items():
            print(f"  {name:22s} {relation:32s} {row['found']:4d} / {row['true_pairs']:<4d} {row['recall']:.3f}")
    print("\nhard negatives by category (P; false pairs / predicted pairs; images wrongly removed):")
    for name, table in categories.items():
        for category, row in table.items():
            print(
                f"  {name:24s} {category:28s} P {row['precision']:.3f}  {row['false_pairs']:3d} / {row['predicted_pairs']:<3d}  removed {row['wrongly_removed']}"
            )
    print(
        json.dumps(
            {
                "embedder": args.embedder,
                "precision": args.precision,
                "calibrate": args.calibrate,
                "near_duplicate_threshold": args.near_duplicate_threshold,
                "hard_negative_seed": args.hard_negative_seed,
                "edited_copies_seed": args.edited_copies_seed,
                "sets": figures,
                "relations": relations,
                "hard_negative_categories": categories,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Poolings of the offline backbone's feature maps, measured as the primary signal alone (issue 16).

Usage:
    .venv/bin/python bench/embedding_variants.py [--out /tmp/imgdedup-variants] [--threshold 0.05]
                                                 [--hard-negative-seed 0] [--edited-copies-seed 0]

SPEC.md makes the embedding the one signal that decides how unique an image is, so the false pairs
that the embedding itself puts within the radius (texture crops, flat colours, moon quarters) can
only go through a better embedding. This script runs EfficientNet-Lite0 once per image (the
pipeline's loader: draft decode, border trimming, padding to a square) and derives every variant
from that one pass, from the final feature map (1280 x 7 x 7) and two earlier stages:

- `avg`: global average pooling (today's vectors; checked equal to the embedder's);
- `max`, `gem3`: global max and generalised-mean (p = 3) pooling;
- `avg+grid2`, `avg+grid3`: the global average beside the averages of a 2 x 2 (3 x 3) grid of cells;
- `spatial7`: the whole 7 x 7 x 1280 map, flattened (the most layout a vector of this map can keep);
- `avg+stages`: the global average beside the averages of stages 4 and 6 (80 and 192 channels);
- `avg+luma`, `max+luma`, `gem8+luma`: a global pooling beside a 16-bin luminance histogram (grey
  level only, so that a grayscale copy keeps its histogram), for flat images; `max+luma` at share
  0.15 is what `core.embedders` ships as the offline pooling `max-luma`;
- `max`, `avg+max`, `max+grid2`, `gem8`, `max+luma0.1`, `max+luma0.25`: neighbours of the above.

Every part is L2-normalised and weighted before concatenation (weights `w_i`, sum of squares 1), so
a variant's cosine is the weighted mean of its parts' cosines: `cos = sum w_i^2 cos_i`.

Pairs are evaluated in numpy, embedding only (no pHash, no turned-copy check, no grouping): a pair
is predicted when its uniqueness (cosine distance / 2) is within the threshold. Per set and variant:
true pairs within it, false pairs within it (by category on the hard-negative set), the largest
uniqueness of the true pairs today's `avg` finds, and the smallest uniqueness of any false pair.
A variant separates where every pair `avg` finds stays below its smallest false distance.

`--time-poolings`: instead, the embedding stage (`core.embedders.embed_in_batches`: decode, border
trimming, forward pass, pooling) in seconds per 100 images for the embedder's two poolings (`avg`,
`max-luma`), alternating, the median of `--repeats` passes over every decodable image of the shared
sets and the generated ones, after one warm-up pass each.

Prints one table per figure and ends with one line of JSON holding every figure.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from imgdedup_pipeline.core.embedders import EfficientNetLite0Embedder  # noqa: E402
from imgdedup_pipeline.core.images import (  # noqa: E402
    ImageRejected,
    discover_image_files,
    load_rgb,
    trim_uniform_borders,
)

BENCH_DATA = PROJECT_ROOT.parent / "shared" / "bench" / "data"
SHARED_SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")
LUMA_BINS = 16


def feature_maps(embedder: EfficientNetLite0Embedder, images) -> dict[str, np.ndarray]:
    """One forward pass: the final map and the outputs of stages 4 and 6, as float32 arrays."""
    import torch

    model = embedder._model
    with torch.inference_mode():
        x = model.bn1(model.conv_stem(embedder.preprocess(images)))
        stages = {}
        for index, stage in enumerate(model.blocks):
            x = stage(x)
            stages[index] = x
        final = model.bn2(model.conv_head(x))
    return {"final": final.float().numpy(), "stage3": stages[3].float().numpy(), "stage5": stages[5].float().numpy()}


def luminance_histogram(image) -> np.ndarray:
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    counts, _ = np.histogram(grey, bins=LUMA_BINS, range=(0, 256))
    return np.sqrt(counts / max(1, counts.sum()))  # Hellinger: cosine of square roots


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def grid_means(maps: np.ndarray, cells: int) -> list[np.ndarray]:
    """Average of each cell of a cells x cells grid over the map (cells overlap when the map's side
    is not a multiple)."""
    import torch

    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(maps), cells).numpy()
    return [pooled[:, :, row, col] for row in range(cells) for col in range(cells)]


def weighted(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Concatenate unit-normalised parts weighted so that cos = sum(share * cos_part), shares summing to 1."""
    total = sum(share for share, _ in parts)
    return unit(np.concatenate([np.sqrt(share / total) * unit(rows) for share, rows in parts], axis=1))


def variants(maps: dict[str, np.ndarray], luma: np.ndarray) -> dict[str, np.ndarray]:
    final = maps["final"]
    average = final.mean(axis=(2, 3))
    maximum = final.max(axis=(2, 3))
    return {
        "avg": unit(average),
        "max": unit(maximum),
        "gem3": unit(np.cbrt(np.mean(np.clip(final, 1e-6, None) ** 3, axis=(2, 3)))),
        "avg+grid2": weighted([(0.5, average)] + [(0.5 / 4, cell) for cell in grid_means(final, 2)]),
        "avg+grid3": weighted([(0.5, average)] + [(0.5 / 9, cell) for cell in grid_means(final, 3)]),
        "spatial7": unit(final.reshape(len(final), -1)),
        "avg+stages": weighted(
            [(0.6, average), (0.2, maps["stage3"].mean(axis=(2, 3))), (0.2, maps["stage5"].mean(axis=(2, 3)))]
        ),
        "avg+luma": weighted([(0.85, average), (0.15, luma)]),
        "max+luma": weighted([(0.85, maximum), (0.15, luma)]),
        "max+grid2": weighted([(0.5, maximum)] + [(0.5 / 4, cell) for cell in grid_means(final, 2)]),
        "avg+max": weighted([(0.5, average), (0.5, maximum)]),
        "gem8": unit(np.mean(np.clip(final, 1e-6, None) ** 8, axis=(2, 3)) ** (1 / 8)),
        "max+luma0.1": weighted([(0.9, maximum), (0.1, luma)]),
        "max+luma0.25": weighted([(0.75, maximum), (0.25, luma)]),
        "gem8+luma": weighted([(0.85, np.mean(np.clip(final, 1e-6, None) ** 8, axis=(2, 3)) ** (1 / 8)), (0.15, luma)]),
    }


def embed_set(embedder, dataset: Path, batch_size: int = 16) -> tuple[list[str], dict[str, np.ndarray]]:
    paths, images = [], []
    for found in discover_image_files(dataset):
        try:
            image = load_rgb(dataset / found.path, draft_size=(embedder.input_size, embedder.input_size))
        except ImageRejected:
            continue
        paths.append(found.path.replace("\\", "/"))
        images.append(trim_uniform_borders(image))
    by_variant: dict[str, list[np.ndarray]] = defaultdict(list)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        luma = np.stack([luminance_histogram(image) for image in batch])
        for name, rows in variants(feature_maps(embedder, batch), luma).items():
            by_variant[name].append(rows)
    today = embedder.embed(images[: min(len(images), batch_size)])
    first = np.concatenate(by_variant["avg"])[: len(today)]
    assert np.allclose(first, today, atol=1e-4), "the `avg` variant must be today's vectors"
    return paths, {name: np.concatenate(rows).astype(np.float32) for name, rows in by_variant.items()}


def labelled_pairs(dataset: Path, paths: list[str]):
    """(i, j, is_true, category) for every pair of images listed in groups.json."""
    groups = json.loads((dataset / "groups.json").read_text())
    truth = {path: group for group, members in groups.items() for path in members}
    category = {}
    manifest = dataset / "manifest.csv"
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            category[row["path"]] = row.get("category") or row.get("relation") or ""
    listed = [i for i, path in enumerate(paths) if path in truth]
    for i, j in itertools.combinations(listed, 2):
        a, b = paths[i], paths[j]
        same = truth[a] == truth[b]
        name = category.get(a, "") if category.get(a) == category.get(b) else "across categories"
        yield i, j, same, name


def pair_distances(dataset: Path, paths: list[str], vectors: dict[str, np.ndarray]):
    """(pairs, is_true, variant -> uniqueness of each pair)."""
    pairs = list(labelled_pairs(dataset, paths))
    first = np.array([p[0] for p in pairs])
    second = np.array([p[1] for p in pairs])
    is_true = np.array([p[2] for p in pairs])
    uniqueness = {name: (1.0 - np.sum(rows[first] * rows[second], axis=1)) / 2.0 for name, rows in vectors.items()}
    return pairs, is_true, uniqueness


def evaluate(pairs, is_true: np.ndarray, uniqueness: dict[str, np.ndarray], threshold: float) -> dict:
    found_today = is_true & (uniqueness["avg"] <= threshold)
    figures = {}
    for name, distance in uniqueness.items():
        within = distance <= threshold
        true_found = int(np.sum(within & is_true))
        false_found = int(np.sum(within & ~is_true))
        by_category = defaultdict(int)
        for index in np.flatnonzero(within & ~is_true):
            by_category[pairs[index][3]] += 1
        predicted = true_found + false_found
        recall = true_found / max(1, int(is_true.sum()))
        precision = true_found / predicted if predicted else 1.0
        figures[name] = {
            "true_pairs": int(is_true.sum()),
            "true_found": true_found,
            "false_found": false_found,
            "P": round(precision, 3),
            "R": round(recall, 3),
            "F1": round(2 * precision * recall / (precision + recall), 3) if precision + recall else 0.0,
            "false_by_category": dict(sorted(by_category.items())),
            "largest_today_found": round(float(distance[found_today].max()), 4) if found_today.any() else None,
            "smallest_false": round(float(distance[~is_true].min()), 4) if (~is_true).any() else None,
            "today_found_lost": int(np.sum(found_today & ~within)),
        }
    return figures


def time_poolings(datasets: dict[str, Path], repeats: int) -> dict:
    """Seconds per 100 images of the embedding stage under each offline pooling (see the docstring)."""
    import statistics
    import time

    from imgdedup_pipeline.core.embedders import OFFLINE_POOLINGS, embed_in_batches

    by_hash = {}
    for dataset in datasets.values():
        for found in discover_image_files(dataset):
            try:
                load_rgb(dataset / found.path)
            except ImageRejected:
                continue
            by_hash[f"{dataset.name}/{found.path}"] = str(dataset / found.path)
    embedders = {pooling: EfficientNetLite0Embedder(pooling=pooling) for pooling in OFFLINE_POOLINGS}

    def one_pass(embedder) -> float:
        started = time.perf_counter()
        for _ in embed_in_batches(by_hash, embedder, lambda path, draft: load_rgb(path, draft_size=draft), 32):
            pass
        return time.perf_counter() - started

    for embedder in embedders.values():
        one_pass(embedder)  # loads the weights and warms the kernels
    seconds: dict[str, list[float]] = {pooling: [] for pooling in embedders}
    for _ in range(repeats):
        for pooling, embedder in embedders.items():
            seconds[pooling].append(one_pass(embedder))
    figures = {pooling: round(statistics.median(times) * 100 / len(by_hash), 3) for pooling, times in seconds.items()}
    for pooling, per_100 in figures.items():
        print(
            f"embedding stage, {pooling:<9} {per_100:.3f} s / 100 images ({len(by_hash)} images, median of {repeats})"
        )
    print(f"max-luma / avg: {figures['max-luma'] / figures['avg']:.3f}")
    return {"images": len(by_hash), "s_per_100": figures, "repeats": repeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/imgdedup-variants")
    parser.add_argument("--threshold", type=float, default=0.05, help="near-duplicate uniqueness (default 0.05)")
    parser.add_argument("--hard-negative-seed", type=int, default=0)
    parser.add_argument("--edited-copies-seed", type=int, default=0)
    parser.add_argument("--time-poolings", action="store_true", help="time the embedding stage per pooling instead")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per pooling (--time-poolings)")
    args = parser.parse_args()
    from bench.edited_copies import write_edited_copies
    from bench.hard_negatives import write_hard_negatives

    edited = Path(args.out) / f"edited-copies-seed{args.edited_copies_seed}"
    write_edited_copies(edited, args.edited_copies_seed)
    hard = Path(args.out) / f"hard-negatives-seed{args.hard_negative_seed}"
    write_hard_negatives(hard, args.hard_negative_seed)
    datasets = {name: BENCH_DATA / name for name in SHARED_SETS} | {edited.name: edited, hard.name: hard}
    if args.time_poolings:
        print(json.dumps(time_poolings(datasets, args.repeats)))
        return 0
    embedder = EfficientNetLite0Embedder()
    figures, distances = {}, {}
    for name, dataset in datasets.items():
        paths, vectors = embed_set(embedder, dataset)
        distances[name] = pair_distances(dataset, paths, vectors)
        figures[name] = evaluate(*distances[name], args.threshold)
    print(f"embedding only, uniqueness threshold {args.threshold:g}")
    header = "variant       " + " | ".join(f"{name[:22]:>40}" for name in datasets)
    print(header)
    for variant in figures[SHARED_SETS[0]]:
        cells = []
        for name in datasets:
            f = figures[name][variant]
            cells.append(
                f"{f['true_found']:>3}/{f['true_pairs']:<3} F{f['false_found']:<3} lost{f['today_found_lost']:<3}"
                f" max{f['largest_today_found'] or 0:.3f} min{f['smallest_false'] or 0:.3f}"
            )
        print(f"{variant:<13} " + " | ".join(f"{cell:>40}" for cell in cells))
    print("false pairs by category (hard negatives):")
    for variant, f in figures[hard.name].items():
        print(f"  {variant:<13} {f['false_found']:>3} {f['false_by_category']}")
    # Thresholds are per model id: each variant at the largest threshold that pairs no different
    # pictures on any set (just below its smallest false distance), against `avg` at the default.
    separating = {}
    print(
        "each variant just below its smallest false distance on any set (true pairs found; lost = found by avg at the default):"
    )
    for variant in figures[SHARED_SETS[0]]:
        smallest = min(figures[name][variant]["smallest_false"] or 2.0 for name in datasets)
        threshold = float(np.nextafter(smallest, 0.0))
        at = {name: evaluate(*distances[name], threshold)[variant] for name in datasets}
        today = {name: figures[name]["avg"]["true_found"] for name in datasets}
        lost = {name: 0 for name in datasets}
        for name in datasets:
            _, is_true, uniqueness = distances[name]
            lost[name] = int(
                np.sum(is_true & (uniqueness["avg"] <= args.threshold) & (uniqueness[variant] > threshold))
            )
        separating[variant] = {"threshold": round(threshold, 4), "sets": at}
        cells = " | ".join(f"{name[:12]} {at[name]['true_found']}/{today[name]} lost {lost[name]}" for name in datasets)
        print(f"  {variant:<13} T {threshold:.4f}: {cells}")
    # The variant at the largest threshold (on a grid) that loses no true pair `avg` finds at the
    # default on the shared sets: what is left of the false pairs, and what the edited copies lose.
    keeping = {}
    print("each variant at the largest grid threshold losing no shared-set pair found by avg at the default:")
    grid = np.round(np.arange(0.010, 0.1001, 0.0005), 4)
    for variant in figures[SHARED_SETS[0]]:
        best = None
        for threshold in grid:
            lost = 0
            for name in SHARED_SETS:
                _, is_true, uniqueness = distances[name]
                lost += int(np.sum(is_true & (uniqueness["avg"] <= args.threshold) & (uniqueness[variant] > threshold)))
            if lost == 0:
                best = float(threshold)
                break
        if best is None:
            print(f"  {variant:<13} none on the grid")
            continue
        at = {name: evaluate(*distances[name], best)[variant] for name in datasets}
        _, is_true, uniqueness = distances[edited.name]
        edited_lost = int(np.sum(is_true & (uniqueness["avg"] <= args.threshold) & (uniqueness[variant] > best)))
        shared_false = sum(at[name]["false_found"] for name in SHARED_SETS)
        keeping[variant] = {"threshold": best, "sets": at, "edited_lost": edited_lost}
        print(
            f"  {variant:<13} T {best:.4f}: shared false {shared_false}, shared true "
            f"{[at[name]['true_found'] for name in SHARED_SETS]}, edited {at[edited.name]['true_found']} (lost {edited_lost}), "
            f"hard negatives {at[hard.name]['false_found']} {at[hard.name]['false_by_category']}"
        )
    print(json.dumps({"threshold": args.threshold, "figures": figures, "separating": separating, "keeping": keeping}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A whole run against the peers on one generated folder: imgdedup, cleanvision, imagededup PHash.

Usage:
    .venv/bin/python bench/whole_run.py --images 1000 [--seed 0] [--work /tmp/imgdedup-whole-run]

The folder is generated from the public photos that ship with scikit-image: non-overlapping
tiles are the distinct pictures, and the rest of the folder are edited copies of them (exact
copies, JPEG re-encodes, resizes, crops, 90° rotations, mirror images, brightness changes, text
overlays), drawn with the seed. Its ground truth (`groups.json`: each tile with its copies) is
what ../shared/bench/evaluate.py scores every tool's pairs against. With few source photos the
distinct tiles are bounded (~110); past that, each tile gets more edited copies, so a large
folder is mostly near-duplicates, as an uncurated scrape often is. Every edit changes the pixels
but the exact copy's, so nearly every file is content to embed.

Each tool runs on the whole folder from nothing: `imgdedup run` as a subprocess with a fresh
--out (Dagster start-up and model load included), cleanvision's exact + near duplicates and
imagededup's PHash in this process. The peers are benchmark extras:
    .venv/bin/pip install imagededup==0.3.3.post2 cleanvision==0.3.7

Ends with one JSON line: per tool seconds, images/s, ratio to imgdedup, pair P/R/F1 on the
planted truth, and peak RSS (imgdedup: the subprocess's; the peers: this process's high-water mark
after them, which includes the generator, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import evaluate, run_cleanvision, run_imagededup  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_PHOTOS = (
    "astronaut",
    "cat",
    "chelsea",
    "coffee",
    "colorwheel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
TILE = 112
TILES_PER_PHOTO = 16
EDITS = ("copy", "jpeg", "resize", "crop", "rotate90", "mirror", "brighter", "overlay")


def distinct_tiles() -> list[tuple[str, Image.Image]]:
    """Non-overlapping TILE x TILE tiles of every source photo, upscaled to 256 px, named by photo.

    At most TILES_PER_PHOTO per photo, spread over it: tiles of one photo share its texture (a
    fundus image, a star field), and unplanted look-alikes would swamp the planted truth.
    """
    from skimage import data

    tiles = []
    for name in SOURCE_PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        boxes = [
            (left, top, left + TILE, top + TILE)
            for top in range(0, photo.height - TILE + 1, TILE)
            for left in range(0, photo.width - TILE + 1, TILE)
        ]
        informative = [
            box for box in boxes if np.asarray(photo.crop(box).convert("L")).std() > 8.0
        ]  # flat tiles are not pictures
        step = max(1, len(informative) // TILES_PER_PHOTO)
        for box in informative[::step][:TILES_PER_PHOTO]:
            tiles.append((name, photo.crop(box).resize((256, 256), Image.Resampling.BICUBIC)))
    return tiles


def edited(image: Image.Image, edit: str, rng: random.Random) -> Image.Image:
    if edit == "resize":
        side = rng.choice((160, 200, 320))
        return image.resize((side, side), Image.Resampling.LANCZOS)
    if edit == "crop":
        margin = rng.randint(8, 20)
        return image.crop((margin, margin, image.width - margin, image.height - margin))
    if edit == "rotate90":
        return image.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)))
    if edit == "mirror":
        return ImageOps.mirror(image)
    if edit == "brighter":
        return ImageEnhance.Brightness(image).enhance(rng.uniform(1.1, 1.3))
    if edit == "overlay":
        copy = image.copy()
        ImageDraw.Draw(copy).text((rng.randint(4, 60), rng.randint(4, 200)), "© imgdedup", fill=(255, 255, 255))
        return copy
    return image  # "copy" and "jpeg" differ in how they are saved


def generate(folder: Path, total: int, seed: int) -> dict[str, list[str]]:
    """Write `total` images into `folder`; returns the ground truth (group id -> paths)."""
    rng = random.Random(seed)
    tiles = distinct_tiles()
    rng.shuffle(tiles)
    distinct = min(len(tiles), max(1, total * 3 // 10))
    groups: dict[str, list[str]] = {}
    folder.mkdir(parents=True)
    for index in range(distinct):
        photo, tile = tiles[index]
        path = f"tiles/{photo}-{index:05d}.png"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        tile.save(folder / path)
        groups[f"g{index:05d}"] = [path]
    for number in range(total - distinct):
        index = rng.randrange(distinct)
        edit = rng.choice(EDITS)
        path = f"edits/{edit}/{number:06d}.{'jpg' if edit == 'jpeg' else 'png'}"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        image = edited(tiles[index][1], edit, rng)
        image.save(folder / path, **({"quality": rng.choice((70, 85))} if edit == "jpeg" else {}))
        groups[f"g{index:05d}"].append(path)
    (folder / "groups.json").write_text(json.dumps({k: v for k, v in groups.items() if len(v) > 1}))
    return groups


def run_imgdedup(folder: Path, out: Path, dagster_home: Path) -> tuple[Path, float]:
    """A fresh `imgdedup run` (offline backbone; no gate: every figure is wanted); its peak RSS in MiB.

    It is this process's first child, so the children's high-water mark right after it is its own.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    command = [
        sys.executable,
        "-m",
        "imgdedup_pipeline.cli",
        "run",
        "--images",
        str(folder),
        "--out",
        str(out),
        "--embedder",
        "offline",
        "--max-duplicate-fraction",
        "1.0",
    ]
    run = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"imgdedup run failed ({run.returncode}): {run.stderr[-3000:]}")
    return out / "uniqueness.csv", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="files in the generated folder (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/imgdedup-whole-run", help="scratch folder, emptied first")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "images"
    groups = generate(folder, args.images, args.seed)
    print(f"generated {args.images} images ({len(groups)} distinct tiles) in {folder}", flush=True)
    logging.disable(logging.WARNING)

    figures: dict = {"images": args.images, "distinct": len(groups), "seed": args.seed, "cpus": os.cpu_count()}
    started = time.perf_counter()
    csv_path, peak = run_imgdedup(folder, work / "imgdedup-out", work / "dagster_home")
    figures["imgdedup"] = {"seconds": time.perf_counter() - started, "peak_rss_mib": round(peak), "csv": csv_path}
    for name, run in (
        ("cleanvision", run_cleanvision),
        ("imagededup_phash", lambda f, o: run_imagededup("PHash", f, o)),
    ):
        started = time.perf_counter()
        csv_path = run(folder, work / name)
        figures[name] = {"seconds": time.perf_counter() - started, "csv": csv_path}
        figures[name]["peak_rss_mib_upper_bound"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    ours = figures["imgdedup"]["seconds"]
    for name in ("imgdedup", "cleanvision", "imagededup_phash"):
        tool = figures[name]
        scored = evaluate(tool.pop("csv"), folder)
        tool.update(
            seconds=round(tool["seconds"], 1),
            images_per_s=round(args.images / tool["seconds"], 1),
            imgdedup_time_ratio=round(ours / tool["seconds"], 2),
            **{k: scored[k] for k in ("pair_precision", "pair_recall", "pair_f1")},
        )
        print(
            f"{name:18s} {tool['seconds']:8.1f} s  {tool['images_per_s']:7.1f} img/s  imgdedup/this {tool['imgdedup_time_ratio']:5.2f}  "
            f"P {tool['pair_precision']:.3f} R {tool['pair_recall']:.3f} F1 {tool['pair_f1']:.3f}",
            flush=True,
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

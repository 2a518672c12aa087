"""Incremental dedup cost: adding 1 % new images to a folder of a few thousand, against a full rerun.

Usage:
    .venv/bin/python bench/incremental.py [--images 3000] [--new-fraction 0.01] [--work /tmp/imgdedup-incremental]

In one process run: (1) a full run on N images; (2) 1 % new images arrive (some are copies of old
ones) and the same --out is run again (incremental); (3) a full run of the final folder into a
fresh --out. Prints wall times, images embedded per run, whether the incremental result equals the
full one, and ends with one line of JSON.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from imgdedup_pipeline.core.settings import Settings  # noqa: E402
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions  # noqa: E402

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "moon",
    "clock",
)


def synthetic_photos(count: int, seed: int) -> list[Image.Image]:
    """Distinct 192 px crops of skimage photos at random positions, scales and tints."""
    from skimage import data

    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        source = sources[rng.integers(len(sources))]
        side = int(rng.integers(min(source.size) // 4, min(source.size) // 2))
        left, top = int(rng.integers(0, source.width - side)), int(rng.integers(0, source.height - side))
        crop = source.crop((left, top, left + side, top + side)).resize((192, 192), Image.Resampling.BILINEAR)
        tint = rng.uniform(0.7, 1.3, 3)
        photos.append(Image.fromarray(np.clip(np.asarray(crop) * tint, 0, 255).astype(np.uint8)))
    return photos


STEP_TIMES: dict[str, dict[str, float]] = {}


def run(settings: Settings, instance, name: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = (
        build_definitions(settings)
        .resolve_job_def(DEDUP_JOB)
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"run failed: {[e.message for e in result.all_events if e.is_failure]}")
    # Where the time goes, per step (asset or check), in seconds.
    STEP_TIMES[name] = {
        e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "image_embeddings"
    ]
    return seconds, int(event.materialization.metadata["embedded_this_run"].value)


def comparable(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "uniqueness.csv").sort_values("path", ignore_index=True)
    return table[["path", "uniqueness", "label", "group_id", "duplicate_of"]]


def main() -> int:
    import dagster as dg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--work", default="/tmp/imgdedup-incremental")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    images = work / "images"
    (images / "batch-0").mkdir(parents=True)
    for index, photo in enumerate(synthetic_photos(args.images, seed=0)):
        photo.save(images / "batch-0" / f"{index:05d}.jpg", quality=90)

    def settings(out: str) -> Settings:
        return Settings(image_root=str(images), out_dir=str(work / out), embedder="offline", max_duplicate_fraction=1.0)

    with dg.instance_for_test() as instance:
        full_seconds, full_embedded = run(settings("incremental"), instance, "first_full")
        new_count = max(1, round(args.images * args.new_fraction))
        (images / "batch-1").mkdir()
        for index, photo in enumerate(synthetic_photos(new_count - new_count // 4, seed=1)):
            photo.save(images / "batch-1" / f"{index:05d}.jpg", quality=90)
        for index in range(new_count // 4):  # some arrivals are copies of images already there
            shutil.copy(images / "batch-0" / f"{index:05d}.jpg", images / "batch-1" / f"copy-{index:05d}.jpg")
        incremental_seconds, incremental_embedded = run(settings("incremental"), instance, "incremental")
        noop_seconds, noop_embedded = run(settings("incremental"), instance, "no_change")
        rerun_seconds, rerun_embedded = run(settings("full-rerun"), instance, "full_rerun")
    equal = comparable(work / "incremental").equals(comparable(work / "full-rerun")) or bool(
        np.allclose(
            comparable(work / "incremental")["uniqueness"], comparable(work / "full-rerun")["uniqueness"], atol=1e-6
        )
    )
    figures = {
        "images": args.images,
        "new_images": new_count,
        "first_full_run_s": round(full_seconds, 1),
        "incremental_run_s": round(incremental_seconds, 1),
        "no_change_run_s": round(noop_seconds, 1),
        "full_rerun_s": round(rerun_seconds, 1),
        "incremental_vs_full_rerun": round(incremental_seconds / rerun_seconds, 4),
        "embedded": {
            "first_full": full_embedded,
            "incremental": incremental_embedded,
            "no_change": noop_embedded,
            "full_rerun": rerun_embedded,
        },
        "incremental_equals_full_rerun": bool(equal),
        "step_seconds": STEP_TIMES,
    }
    print(f"full run on {args.images} images: {full_seconds:.1f} s, {full_embedded} embedded")
    print(f"+{new_count} images, incremental: {incremental_seconds:.1f} s, {incremental_embedded} embedded")
    print(f"no change: {noop_seconds:.1f} s, {noop_embedded} embedded")
    print(f"full rerun of the final folder: {rerun_seconds:.1f} s, {rerun_embedded} embedded")
    for name in ("incremental", "no_change"):
        slowest = sorted(STEP_TIMES[name].items(), key=lambda item: -item[1])[:8]
        print(f"{name} steps: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in slowest))
    print(f"incremental / full rerun = {incremental_seconds / rerun_seconds:.3f}; results equal: {equal}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

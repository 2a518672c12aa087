"""Fixed costs of `imgdedup run`: a rerun on a small folder in which nothing changed.

Usage:
    .venv/bin/python bench/rerun.py [--images 10] [--repeats 5] [--work /tmp/imgdedup-rerun]
        [--source ../shared/bench/data/idealo-imagededup] [--project DIR [DIR ...]]

Copies the first `--images` image files (sorted by path) of `--source` into WORK/images, runs
`imgdedup run --embedder offline` once into WORK/out (the first run: embeds, exports the model;
DAGSTER_HOME is WORK/dagster_home), then `--repeats` more times with nothing changed, each as its
own process like a user's rerun.
Prints each rerun's wall-clock seconds (process start to exit), the CLI's `seconds per step` line
and the heavy libraries the process imported; ends with one line of JSON holding the medians.
`--project` runs other checkouts' code (e.g. `git archive` of an older commit) with this
interpreter, each on its own copy of the folder, their reruns taking turns (round-robin), so that
a before/after shares the machine's load; the JSON line then holds one summary per checkout.
CPU seconds (user + system, the process and its children) are printed beside the wall time: on a
shared machine they move less with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = PROJECT_ROOT.parent / "shared" / "bench" / "data" / "idealo-imagededup"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
HEAVY_MODULES = ("torch", "transformers", "openvino", "onnxruntime", "great_expectations", "lancedb", "matplotlib")
# Run by the child before `cli.main`: report which heavy modules the run imported, at exit.
PROBE = """
import atexit, sys
atexit.register(lambda: print("imported: " + " ".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))
sys.argv[0] = "imgdedup"
from imgdedup_pipeline.cli import main
sys.exit(main())
"""


def copy_images(source: Path, count: int, images: Path) -> list[Path]:
    """Copy the first `count` image files under `source` (sorted by path) into `images`, flat."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if len(files) < count:
        raise SystemExit(f"{source} holds {len(files)} image files, fewer than --images {count}")
    images.mkdir(parents=True)
    for index, path in enumerate(files):
        target = images / f"{index:03d}_{path.name}"
        target.write_bytes(path.read_bytes())
    return files


def run_once(images: Path, out: Path, project: Path) -> dict:
    """One `imgdedup run` in a fresh process: wall seconds, per-step seconds, modules imported."""
    command = [
        sys.executable,
        "-c",
        PROBE.format(heavy=HEAVY_MODULES),
        "run",
        "--images",
        str(images),
        "--out",
        str(out),
        "--embedder",
        "offline",
    ]
    started, cpu_before = time.perf_counter(), _children_cpu_seconds()
    finished = subprocess.run(
        command,
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project), "DAGSTER_HOME": str(out.parent / "dagster_home")},
    )
    wall, cpu = time.perf_counter() - started, _children_cpu_seconds() - cpu_before
    if finished.returncode != 0:
        raise SystemExit(
            f"imgdedup run failed (exit {finished.returncode}):\n{finished.stdout}\n{finished.stderr[-4000:]}"
        )
    line = next(line for line in finished.stdout.splitlines() if line.startswith("seconds per step"))
    from_first_step = float(re.search(r"\(([\d.]+) s from the first step's start\)", line).group(1))
    steps = {name: float(seconds) for name, seconds in re.findall(r"(\w+) ([\d.]+)(?:,|$)", line.split(": ", 1)[1])}
    imported = next(
        (line.split(": ", 1)[1].split() for line in finished.stderr.splitlines() if line.startswith("imported: ")), []
    )
    return {"wall_s": wall, "cpu_s": cpu, "steps_s": from_first_step, "per_step": steps, "imported": imported}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(project: Path, images: int, first: dict, reruns: list[dict]) -> dict:
    median_steps = {name: statistics.median(r["per_step"][name] for r in reruns) for name in reruns[0]["per_step"]}
    return {
        "project": str(project),
        "images": images,
        "repeats": len(reruns),
        "first_run_wall_s": round(first["wall_s"], 2),
        "rerun_wall_s_median": round(statistics.median(r["wall_s"] for r in reruns), 2),
        "rerun_wall_s_min": round(min(r["wall_s"] for r in reruns), 2),
        "rerun_cpu_s_median": round(statistics.median(r["cpu_s"] for r in reruns), 2),
        "rerun_steps_s_median": round(statistics.median(r["steps_s"] for r in reruns), 2),
        "rerun_per_step_s_median": median_steps,
        "rerun_imported": reruns[-1]["imported"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", default="/tmp/imgdedup-rerun")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    parser.add_argument(
        "--project",
        nargs="+",
        default=[str(PROJECT_ROOT)],
        help="checkouts whose cli.py runs, in turns (default: this one)",
    )
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    projects = [Path(p).resolve() for p in args.project]
    folders = []
    for index, project in enumerate(projects):
        images, out = work / str(index) / "images", work / str(index) / "out"
        (out.parent / "dagster_home").mkdir(parents=True)
        copy_images(Path(args.source), args.images, images)
        first = run_once(images, out, project)
        print(f"{project}: first run {first['wall_s']:.2f} s wall")
        folders.append((project, images, out, first, []))
    for repeat in range(args.repeats):
        for project, images, out, _, reruns in folders:
            rerun = run_once(images, out, project)
            reruns.append(rerun)
            steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in rerun["per_step"].items())
            print(
                f"{project} rerun {repeat + 1}: {rerun['wall_s']:.2f} s wall, {rerun['cpu_s']:.2f} s CPU, {rerun['steps_s']:.1f} s from the first "
                f"step's start ({steps}); imported: {' '.join(rerun['imported']) or 'none of ' + ' '.join(HEAVY_MODULES)}"
            )
    summaries = [summarize(project, args.images, first, reruns) for project, _, _, first, reruns in folders]
    print(json.dumps({"load_average_1min": round(os.getloadavg()[0], 2), "runs": summaries}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

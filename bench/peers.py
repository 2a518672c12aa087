"""Side by side with the peers on every shared benchmark set: our pipeline, imagededup's hash
methods and cleanvision's exact / near duplicates, each scored by ../shared/bench/evaluate.py.

Usage:
    .venv/bin/python bench/peers.py [--out /tmp/imgdedup-bench-peers] [--sets idealo-imagededup ...]

The peers are benchmark extras, not runtime dependencies:
    .venv/bin/pip install imagededup==0.3.3.post2 cleanvision==0.3.7

Every method writes SPEC.md's interchange CSV (path, uniqueness, label, group_id, duplicate_of)
for the set; a peer's duplicate lists / sets are turned into groups by leader assignment in path
order (the first unassigned path leads, its unassigned duplicates join it), every file it did not
group is a singleton. Wall time covers the method's whole run on the folder (our pipeline: the
`imgdedup run` subprocess, model load included). Prints one line per set and method and ends with
one line of JSON holding every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH = PROJECT_ROOT.parent / "shared" / "bench"
SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
HASH_METHODS = ("PHash", "DHash", "AHash", "WHash")


def image_paths(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def write_groups(paths: list[str], duplicates_of: dict[str, set[str]], out_csv: Path) -> None:
    """Leader assignment over a peer's duplicate relation, written as the interchange CSV."""
    leader = {}
    for path in paths:
        if path in leader:
            continue
        members = sorted(d for d in duplicates_of.get(path, ()) if d not in leader and d != path)
        if not members:
            continue
        leader[path] = path
        for member in members:
            leader[member] = path
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "uniqueness", "label", "group_id", "duplicate_of"])
        for path in paths:
            keeper = leader.get(path)
            removed = keeper is not None and keeper != path
            writer.writerow(
                [
                    path,
                    0.0 if removed else 1.0,
                    "duplicate" if removed else "unique",
                    keeper or "",
                    keeper if removed else "",
                ]
            )


def symmetric(pairs) -> dict[str, set[str]]:
    relation: dict[str, set[str]] = {}
    for a, b in pairs:
        relation.setdefault(a, set()).add(b)
        relation.setdefault(b, set()).add(a)
    return relation


def run_ours(folder: Path, out: Path) -> Path:
    run = subprocess.run(
        [
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
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if run.returncode not in (0, 1):
        raise RuntimeError(f"imgdedup run failed ({run.returncode}): {run.stderr[-2000:]}")
    return out / "uniqueness.csv"


def run_imagededup(method: str, folder: Path, out: Path) -> Path:
    from imagededup import methods

    hasher = getattr(methods, method)(verbose=False)
    found = hasher.find_duplicates(image_dir=folder, recursive=True, num_enc_workers=0, num_dist_workers=0)
    pairs = [(Path(a).as_posix(), Path(b).as_posix()) for a, dups in found.items() for b in dups]
    csv_path = out / "uniqueness.csv"
    write_groups(image_paths(folder), symmetric(pairs), csv_path)
    return csv_path


def run_cleanvision(folder: Path, out: Path) -> Path:
    from cleanvision import Imagelab

    paths = image_paths(folder)
    # cleanvision raises on the first file Pillow cannot identify; those files stay singletons.
    readable = [p for p in paths if _pillow_opens(folder / p)]
    lab = Imagelab(filepaths=[str(folder / p) for p in readable], verbose=False)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, verbose=False)
    pairs = []
    for issue in ("exact_duplicates", "near_duplicates"):
        for group in lab.info[issue]["sets"]:
            members = sorted(Path(m).relative_to(folder).as_posix() for m in group)
            pairs.extend((m, n) for m in members for n in members if m != n)
    csv_path = out / "uniqueness.csv"
    write_groups(paths, symmetric(pairs), csv_path)
    return csv_path


def _pillow_opens(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:  # any decode failure: the peer cannot read it either
        return False


def evaluate(csv_path: Path, folder: Path) -> dict:
    scored = subprocess.run(
        [sys.executable, str(BENCH / "evaluate.py"), str(csv_path), str(folder), "--json"],
        capture_output=True,
        text=True,
    )
    if not scored.stdout.strip():
        raise RuntimeError(f"evaluate.py failed on {csv_path}: {scored.stderr[-1000:]}")
    return json.loads(scored.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/imgdedup-bench-peers")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the peers log every unreadable file; evaluate.py counts them
    methods = {
        "imgdedup (offline)": run_ours,
        **{f"imagededup {m}": (lambda f, o, m=m: run_imagededup(m, f, o)) for m in HASH_METHODS},
        "cleanvision exact+near": run_cleanvision,
    }
    figures: dict = {}
    for name in args.sets:
        folder = BENCH / "data" / name
        figures[name] = {}
        for method, run in methods.items():
            out = Path(args.out) / name / method.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
            started = time.perf_counter()
            csv_path = run(folder, out)
            seconds = time.perf_counter() - started
            result = evaluate(csv_path, folder)
            figures[name][method] = {
                "seconds": round(seconds, 2),
                **{
                    k: result[k]
                    for k in (
                        "images_scored",
                        "images_missing",
                        "pair_precision",
                        "pair_recall",
                        "pair_f1",
                        "groups_left_with_exactly_one",
                        "singletons_removed",
                    )
                },
            }
            print(
                f"{name:22s} {method:24s} P {result['pair_precision']:.3f}  R {result['pair_recall']:.3f}  F1 {result['pair_f1']:.3f}  {seconds:6.2f} s",
                flush=True,
            )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the generated benchmark sets share: a `manifest.csv` row per image in the shared sets'
format, the `groups.json` ground truth, and the command line that writes a set."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def manifest_row(
    out: Path, path: str, image: Image.Image, group: str, relation: str, image_format: str, **extra
) -> dict:
    """The manifest row of `image`, already saved at `out / path`, in ../shared/bench's columns."""
    payload = (out / path).read_bytes()
    return {
        "path": path,
        "group": group,
        "relation": relation,
        **extra,
        "bytes": len(payload),
        "md5": hashlib.md5(payload).hexdigest(),
        "format": image_format,
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "exif_orientation": 1,
        "decodable": "yes",
        "same_bytes_as": "",
    }


def write_ground_truth(out: Path, groups: dict[str, list[str]], rows: list[dict]) -> None:
    """`groups.json` (group -> paths, what evaluate.py scores against) and `manifest.csv`."""
    (out / "groups.json").write_text(json.dumps(groups, indent=1))
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def generator_main(description: str, write: Callable[[Path, int], dict[str, int]]) -> int:
    """`python bench/<set>.py OUT [--seed N]`: write the set, print what was written as JSON."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = write(args.out, args.seed)
    print(json.dumps({"out": str(args.out), "seed": args.seed, "images": counts}))
    return 0

"""The generated hard-negative set (`bench/hard_negatives.py`) is seedable and in the shared sets'
format: same seed, same files; every image its own ground-truth group."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.hard_negatives import CATEGORIES, write_hard_negatives  # noqa: E402


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_same_seed_same_files_and_another_seed_other_crops(tmp_path):
    counts = write_hard_negatives(tmp_path / "a", seed=3)
    write_hard_negatives(tmp_path / "b", seed=3)
    write_hard_negatives(tmp_path / "c", seed=4)
    first, again, other = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert first == again
    assert first.keys() == other.keys() and first != other
    assert set(counts) == set(CATEGORIES) and all(counts.values())


def test_every_image_is_its_own_group_and_listed_once(tmp_path):
    write_hard_negatives(tmp_path, seed=0)
    groups = json.loads((tmp_path / "groups.json").read_text())
    with open(tmp_path / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    images = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.png"))
    assert sorted(row["path"] for row in manifest) == images
    assert all(len(members) == 1 for members in groups.values())
    assert sorted(members[0] for members in groups.values()) == images
    assert {row["category"] for row in manifest} == set(CATEGORIES)

"""The generated set of missed edits (`bench/edited_copies.py`) is seedable and in the shared sets'
format: same seed, same files; one ground-truth group per picture, every relation in it."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.edited_copies import PICTURES, RELATIONS, write_edited_copies  # noqa: E402
from bench.quality import relation_category  # noqa: E402


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_same_seed_same_files_and_another_seed_other_edits(tmp_path):
    write_edited_copies(tmp_path / "a", seed=1)
    write_edited_copies(tmp_path / "b", seed=1)
    write_edited_copies(tmp_path / "c", seed=2)
    first, again, other = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert first == again
    assert first.keys() == other.keys() and first != other


def test_one_group_per_picture_with_every_relation_reported_by_its_own_category(tmp_path):
    write_edited_copies(tmp_path, seed=0)
    groups = json.loads((tmp_path / "groups.json").read_text())
    with open(tmp_path / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert sorted(groups) == sorted(PICTURES) and all(len(members) == 1 + len(RELATIONS) for members in groups.values())
    assert sorted(row["path"] for row in manifest) == sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jpg")
    )
    categories = {relation_category(row["relation"]) for row in manifest}
    assert len(categories) == 1 + len(RELATIONS) and not any(c.startswith("other") for c in categories)

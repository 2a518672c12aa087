"""Human overrides: a review file that pins images to `keep` or `remove` (SPEC.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

REVIEW_FILE_NAMES = ("review.csv", "review.yaml", "review.yml")
REVIEW_DIR = ".imgdedup"
DECISIONS = ("keep", "remove")


def find_review_file(image_root: str | Path) -> Path | None:
    """The review file in `<image_root>/.imgdedup/`, if one exists."""
    for name in REVIEW_FILE_NAMES:
        candidate = Path(image_root) / REVIEW_DIR / name
        if candidate.is_file():
            return candidate
    return None


def read_review_file(path: str | Path | None) -> dict[str, str]:
    """Read path -> decision pins.

    CSV: columns `path,decision`. YAML: a mapping `{path: keep|remove}` or a list of
    `{path: ..., decision: ...}` rows. Paths are relative to the image root, '/'-separated.

    Raises:
        ValueError: a decision other than keep/remove, naming the row.
    """
    if path is None:
        return {}
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = [(r.get("path", ""), r.get("decision", "")) for r in csv.DictReader(f)]
    else:
        loaded = yaml.safe_load(path.read_text()) or {}
        rows = (
            list(loaded.items())
            if isinstance(loaded, dict)
            else [(r.get("path", ""), r.get("decision", "")) for r in loaded]
        )
    pins = {}
    for relative, decision in rows:
        decision = str(decision).strip().lower()
        if decision not in DECISIONS:
            raise ValueError(f"{path}: decision for {relative!r} is {decision!r}; expected one of {DECISIONS}")
        pins[str(relative).strip().replace("\\", "/")] = decision
    return pins

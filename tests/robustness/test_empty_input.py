"""An image root with nothing usable in it (issue 13, item 3): the run succeeds, writes every
export with its header, and the accounting holds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from robustness_support import run_cli

EXPORTS = ("uniqueness.csv", "duplicates.csv", "clean.csv", "rejected.csv", "training_manifest.csv")


def make_empty(root: Path) -> int:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("not an image: not discovered")
    return 0


def make_only_bad(root: Path) -> int:
    root.mkdir(parents=True)
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not a jpeg")
    return 2


@pytest.mark.parametrize("make_root", [make_empty, make_only_bad], ids=["empty_folder", "only_bad_files"])
def test_a_root_without_usable_images_exits_0_with_every_export(tmp_path, make_root):
    rejected_count = make_root(tmp_path / "images")
    out = tmp_path / "out"
    completed = run_cli(
        "run", "--images", tmp_path / "images", "--out", out, "--embedder", "offline", dagster_home=tmp_path / "home"
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    for name in EXPORTS:
        table = pd.read_csv(out / name)  # a file with a header line, even when it has no rows
        assert "path" in table.columns, name
        assert len(table) == (rejected_count if name == "rejected.csv" else 0), name
    assert (
        f"dedup done: {rejected_count} files discovered: 0 clean, 0 removed as duplicates, {rejected_count} rejected"
        in completed.stdout
    )
    # A folder without a single image is more likely a wrong path than a clean dataset: say so.
    assert ("no file with an image extension" in completed.stdout) == (rejected_count == 0)

"""core/export_set.py: a run's exports are published as one set behind one pointer."""

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from imgdedup_pipeline.core.atomic_write import write_atomically
from imgdedup_pipeline.core.export_set import (
    SET_FILES,
    UNPUBLISHED_GRACE_S,
    add_to_published_set,
    current_folder,
    publish,
    published_run_id,
    run_folder,
)


def write_set(out: Path, run_id: str, names=SET_FILES) -> None:
    for name in names:
        write_atomically(
            run_folder(out, run_id) / name, lambda path, name=name: Path(path).write_text(f"{run_id} {name}\n")
        )


def test_top_level_names_switch_together_and_only_two_sets_are_kept(tmp_path):
    for run_id in ("run1", "run2", "run3"):
        write_set(tmp_path, run_id)
        publish(tmp_path, run_id)
        assert published_run_id(tmp_path) == run_id
        assert {(tmp_path / name).read_text() for name in SET_FILES} == {f"{run_id} {name}\n" for name in SET_FILES}
    assert all((tmp_path / name).is_symlink() for name in SET_FILES)
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["current", "run2", "run3"]


def test_an_unpublished_set_is_invisible(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    write_set(tmp_path, "run2", names=("uniqueness.csv", "duplicates.csv"))  # killed before clean.csv
    assert (tmp_path / "duplicates.csv").read_text() == "run1 duplicates.csv\n"


def test_a_set_another_run_is_still_writing_survives_a_publish(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    write_set(tmp_path, "slow", names=("uniqueness.csv",))  # a second run on the same folder, mid-way
    write_set(tmp_path, "fast")
    publish(tmp_path, "fast")
    write_set(tmp_path, "slow", names=("clean.csv",))
    publish(tmp_path, "slow")
    assert (tmp_path / "uniqueness.csv").read_text() == "slow uniqueness.csv\n"  # its own, not carried over


def test_a_set_left_unpublished_for_a_day_is_removed_at_the_next_publish(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    write_set(tmp_path, "killed", names=("uniqueness.csv",))
    day_ago = time.time() - UNPUBLISHED_GRACE_S - 60
    for path in (run_folder(tmp_path, "killed"), run_folder(tmp_path, "killed") / "uniqueness.csv"):
        os.utime(path, (day_ago, day_ago))
    write_set(tmp_path, "run2")
    publish(tmp_path, "run2")
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["current", "run1", "run2"]


def test_names_a_run_did_not_write_are_carried_over(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    write_set(tmp_path, "run2", names=("clean.csv",))
    publish(tmp_path, "run2")
    assert (tmp_path / "clean.csv").read_text() == "run2 clean.csv\n"
    assert (tmp_path / "duplicates.csv").read_text() == "run1 duplicates.csv\n"
    assert set(json.loads((current_folder(tmp_path) / "manifest.json").read_text())["files"]) == set(SET_FILES)


def test_the_gated_file_joins_the_published_set_only_when_written(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    add_to_published_set(tmp_path, "training_manifest.csv", lambda path: Path(path).write_text("run1 manifest\n"))
    assert (tmp_path / "training_manifest.csv").read_text() == "run1 manifest\n"
    write_set(tmp_path, "run2")
    publish(tmp_path, "run2")  # its gate held the manifest back: none, rather than run1's
    assert not (tmp_path / "training_manifest.csv").exists()


def test_a_copy_made_by_following_links_is_published_over(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    write_set(original, "run1")
    publish(original, "run1")
    shutil.copytree(original, copy)  # follows links: `current` and the top-level names are plain
    assert published_run_id(copy) == "run1"
    write_set(copy, "run2", names=("clean.csv",))
    publish(copy, "run2")
    assert (copy / "exports" / "current").is_symlink() and (
        copy / "duplicates.csv"
    ).read_text() == "run1 duplicates.csv\n"


def test_a_folder_at_an_export_name_stops_the_publish_before_anything_switches(tmp_path):
    write_set(tmp_path, "run1")
    publish(tmp_path, "run1")
    write_set(tmp_path, "run2")
    (tmp_path / "report.html").unlink()
    (tmp_path / "report.html").mkdir()
    with pytest.raises(FileExistsError, match="report.html"):
        publish(tmp_path, "run2")
    assert published_run_id(tmp_path) == "run1"


def test_files_get_the_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        written = write_atomically(tmp_path / "a.csv", lambda path: Path(path).write_text("x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o640

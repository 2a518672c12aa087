"""The output folder is the tool's own (issue 13, items 5, 6, 7): a user's files in --out are never
overwritten, nothing is written through a symlink out of --out, and --out inside --images is never
read as input."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from robustness_support import RUN_FLAGS, run_cli
from synthetic_images import write_photo_tiles

from imgdedup_pipeline.core.output_folder import (
    MARKER_NAME,
    claim_output_folder,
    escaping_symlinks,
    output_folder_problems,
)
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own") / "images"
    write_photo_tiles(folder, 6)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- Item 6: a user's files in --out are not overwritten -------------------------------------------


def test_a_folder_of_someone_elses_files_is_refused_with_exit_2_and_left_untouched(tmp_path, images):
    out = tmp_path / "my-results"
    out.mkdir()
    for name in ("clean.csv", "report.html", "uniqueness.csv"):
        (out / name).write_text(f"the user's own {name}\n")
    before = snapshot(out)
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=tmp_path / "home")
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert str(out) in completed.stderr and "not created by imgdedup" in completed.stderr
    assert len([line for line in completed.stderr.splitlines() if line.strip()]) == 1
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [
        "clean.csv",
        "report.html",
        "uniqueness.csv",
    ]


def test_the_output_resource_refuses_such_a_folder_too(tmp_path, images):
    out = tmp_path / "my-results"
    out.mkdir()
    (out / "clean.csv").write_text("the user's own\n")
    job = build_definitions(
        Settings(image_root=str(images), out_dir=str(out), embedder="offline", max_duplicate_fraction=1.0)
    ).resolve_job_def(DEDUP_JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert [p.name for p in out.iterdir()] == ["clean.csv"] and (out / "clean.csv").read_text() == "the user's own\n"


def test_new_empty_and_own_folders_are_accepted_and_marked(tmp_path):
    assert output_folder_problems(tmp_path / "new") == []
    (tmp_path / "empty").mkdir()
    assert output_folder_problems(tmp_path / "empty") == []
    claim_output_folder(tmp_path / "empty")
    (tmp_path / "empty" / "clean.csv").write_text("written by imgdedup\n")
    assert (tmp_path / "empty" / MARKER_NAME).is_file() and output_folder_problems(tmp_path / "empty") == []


def test_an_empty_folder_is_used_and_a_second_run_into_it_is_fine(tmp_path, images):
    out = tmp_path / "out"
    out.mkdir()
    for _ in range(2):
        completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=tmp_path / "home")
        assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(pd.read_csv(out / "clean.csv")) == 6


# --- Item 7: nothing is written through a symlink out of --out ------------------------------------


@pytest.mark.parametrize("planted", ["state/thumbnails", "state/neighbor-searches", "state/lancedb", "state"])
def test_a_symlink_out_of_the_output_folder_is_refused_before_any_work(tmp_path, images, planted):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    claim_output_folder(out)  # the tool's own folder, from an earlier run
    (out / "state").mkdir()
    link = out / planted
    if link.exists():
        link.rmdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=tmp_path / "home")
    assert completed.returncode == 2, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert str(link) in completed.stderr and "outside" in completed.stderr
    assert list(elsewhere.iterdir()) == []


def test_only_links_that_leave_the_folder_are_refused(tmp_path):
    out = tmp_path / "out"
    claim_output_folder(out)
    (out / "exports" / "run1").mkdir(parents=True)
    (out / "exports" / "current").symlink_to("run1")  # inside: the published set's pointer
    (out / "clean.csv").symlink_to("exports/current/clean.csv")  # inside, even while dangling
    assert output_folder_problems(out) == []
    deep = out / "state" / "lancedb" / "vectors.lance" / "data"
    deep.mkdir(parents=True)
    (deep / "fragment").symlink_to(tmp_path)
    (out / "loop").symlink_to(out / "loop")
    found = {link for link, _ in escaping_symlinks(out)}
    assert found == {deep / "fragment", out / "loop"}
    assert len(output_folder_problems(out)) == 1


# --- Item 5: --out inside --images is not scanned ---------------------------------------------------


def test_an_output_folder_inside_the_image_root_is_never_read_as_input(tmp_path):
    images = tmp_path / "images"
    write_photo_tiles(images, 6)
    out = images / "dedup-results"
    for _ in range(2):  # the second run would find the first run's thumbnails, histogram and exports
        completed = run_cli("run", "--images", images, "--out", out, *RUN_FLAGS, dagster_home=tmp_path / "home")
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "dedup done: 6 files discovered" in completed.stdout
    placed = [
        *pd.read_csv(out / "clean.csv")["path"],
        *pd.read_csv(out / "duplicates.csv")["path"],
        *pd.read_csv(out / "rejected.csv")["path"],
    ]
    assert len(placed) == 6 and not any(path.startswith("dedup-results/") for path in placed)

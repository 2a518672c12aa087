"""Tests for core.report: grouping and ordering for review, escaping, a self-contained page."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.core.report import (
    DECISION_KEEP,
    DECISION_REMOVE,
    DECISION_REVIEW,
    format_file_size,
    render_duplicates_report,
    report_groups,
    thumbnail_jpeg,
)
from imgdedup_pipeline.core.scoring import Thresholds


def interchange_rows(rows):
    columns = ["image_id", "path", "uniqueness", "label", "group_id", "group_keeper", "relation", "removed", "reason"]
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture
def tables():
    interchange = interchange_rows(
        [
            ("k1", "a/keep.png", 0.30, "unique", "k1", "a/keep.png", None, False, "kept: keeper of its group"),
            ("c1", "a/copy.png", 0.0, "duplicate", "k1", "a/keep.png", "duplicate", True, "duplicate of a/keep.png"),
            ("k2", "b/keep.jpg", 0.02, "near_duplicate", "k2", "b/keep.jpg", None, False, "kept: keeper of its group"),
            (
                "n2",
                "b/crop.jpg",
                0.02,
                "near_duplicate",
                "k2",
                "b/keep.jpg",
                "near_duplicate",
                False,
                "kept for review: near-duplicate of b/keep.jpg",
            ),
            (
                "m2",
                "b/copy.jpg",
                0.0,
                "duplicate",
                "k2",
                "b/keep.jpg",
                "near_duplicate",
                True,
                "near-duplicate of b/keep.jpg",
            ),
            ("s", "single.png", 0.4, "unique", None, None, None, False, "kept: no duplicate"),
        ]
    )
    images = pd.DataFrame(
        {
            "image_id": ["k1", "c1", "k2", "n2", "m2", "s"],
            "width": [10, 10, 20, 18, 20, 5],
            "height": [8, 8, 16, 14, 16, 5],
            "bytes": [100, 90, 2048, 1500, 2000, 10],
        }
    )
    return interchange, images


def test_groups_leave_out_singletons_and_label_by_relation(tables):
    groups = report_groups(*tables)
    assert [(g.group_id, g.label) for g in groups] == [("k1", "duplicate"), ("k2", "near_duplicate")]


def test_groups_sorted_by_min_uniqueness_then_keeper_path(tables):
    interchange, images = tables
    # Both groups have a member at 0.0, so the keeper path decides: a/keep.png before b/keep.jpg.
    assert [g.keeper.path for g in report_groups(interchange, images)] == ["a/keep.png", "b/keep.jpg"]
    raised = interchange.assign(uniqueness=interchange["uniqueness"].where(interchange["group_id"] != "k1", 0.5))
    assert [g.keeper.path for g in report_groups(raised, images)] == ["b/keep.jpg", "a/keep.png"]


def test_keeper_first_then_members_by_ascending_uniqueness_with_decisions(tables):
    near = report_groups(*tables)[1]
    assert [m.path for m in near.members] == ["b/keep.jpg", "b/copy.jpg", "b/crop.jpg"]
    assert [m.decision for m in near.members] == [DECISION_KEEP, DECISION_REMOVE, DECISION_REVIEW]
    assert near.keeper.is_keeper and (near.keeper.width, near.keeper.height, near.keeper.file_bytes) == (20, 16, 2048)


@pytest.mark.parametrize(
    "size, text",
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB")],
    ids=["zero", "bytes", "kib", "fraction", "mib"],
)
def test_format_file_size(size, text):
    assert format_file_size(size) == text


def test_thumbnail_keeps_aspect_ratio_within_the_size():
    image = Image.new("RGB", (640, 320), (10, 200, 30))
    data = thumbnail_jpeg(image, max_side=160)
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (160, 80)
    assert image.size == (640, 320)  # input untouched


def test_page_escapes_paths_and_fetches_nothing(tables):
    interchange, images = tables
    evil = '<img src=x onerror=alert(1)>"&.png'
    interchange = interchange.replace({"a/copy.png": evil})
    report = render_duplicates_report(report_groups(interchange, images), lambda path: b"\xff\xd8jpeg", Thresholds())
    assert evil not in report.html
    assert "&lt;img src=x onerror=alert(1)&gt;&quot;&amp;.png" in report.html
    assert not re.search(r"""(src|href)=["'](https?:|//)""", report.html)
    assert report.html.count('<section class="group"') == 2 and report.groups_shown == report.groups_total == 2
    assert 'data-label="duplicate"' in report.html and 'data-label="near_duplicate"' in report.html
    assert "uniqueness ≤ 0.0001" in report.html and "uniqueness ≤ 0.05" in report.html


def test_thumbnail_failures_are_shown_and_returned(tables):
    def thumbnail(path):
        if path == "a/copy.png":
            raise OSError("file vanished")
        return b"jpeg"

    report = render_duplicates_report(report_groups(*tables), thumbnail, Thresholds())
    assert report.thumbnail_errors == {"a/copy.png": "OSError: file vanished"}
    assert "no thumbnail: OSError: file vanished" in report.html


def test_thumbnails_made_in_threads_give_the_same_page_and_only_for_shown_members():
    import threading

    from imgdedup_pipeline.core.report import ReportGroup, ReportImage

    groups = [
        ReportGroup(
            group_id=f"g{g}",
            label="duplicate",
            members=tuple(
                ReportImage(f"g{g}/m{i}.png", 8, 8, 100, 0.0, "duplicate", i == 0, "keep" if i == 0 else "remove", "")
                for i in range(6)
            ),
        )
        for g in range(4)
    ]
    requested, threads = [], set()

    def thumbnail(path):
        requested.append(path)
        threads.add(threading.current_thread().name)
        if path.endswith("m3.png"):
            raise ValueError(f"cannot decode {path}")
        return path.encode()

    serial = render_duplicates_report(groups, thumbnail, Thresholds(), max_groups=3, max_members=4, thumbnail_workers=1)
    assert sorted(requested) == sorted(f"g{g}/m{i}.png" for g in range(3) for i in range(4))
    requested.clear()
    threaded = render_duplicates_report(groups, thumbnail, Thresholds(), max_groups=3, max_members=4)
    assert any(name.startswith("thumbnail") for name in threads)
    assert len(requested) == 12 and threaded.html == serial.html
    assert (
        threaded.thumbnail_errors
        == serial.thumbnail_errors
        == {f"g{g}/m3.png": f"ValueError: cannot decode g{g}/m3.png" for g in range(3)}
    )


def test_max_groups_cuts_and_says_so(tables):
    report = render_duplicates_report(report_groups(*tables), lambda path: b"jpeg", Thresholds(), max_groups=1)
    assert (report.groups_shown, report.groups_total) == (1, 2)
    assert report.html.count('<section class="group"') == 1
    assert "Showing the 1 groups with the lowest uniqueness of 2" in report.html


def test_no_groups_gives_a_page_that_says_so():
    report = render_duplicates_report([], lambda path: b"", Thresholds())
    assert "No duplicate or near-duplicate groups." in report.html and report.groups_total == 0


def test_max_members_caps_a_group_and_says_how_many_more():
    from imgdedup_pipeline.core.report import ReportGroup, ReportImage

    members = [
        ReportImage(f"copy{i:04d}.png", 8, 8, 100, 0.0, "duplicate", i == 0, "keep" if i == 0 else "remove", "copy")
        for i in range(2001)
    ]
    group = ReportGroup(group_id="g1", label="duplicate", members=tuple(members))
    page = render_duplicates_report([group], lambda path: b"\xff\xd8jpeg", Thresholds(1e-6, 0.05), max_members=50).html
    assert page.count('class="thumb"') == 50
    assert "1951 more in this group" in page and "copy0000.png" in page and "copy0050.png" not in page
    uncapped = render_duplicates_report([group], lambda path: b"\xff\xd8jpeg", Thresholds(1e-6, 0.05)).html
    assert uncapped.count('class="thumb"') == 2001

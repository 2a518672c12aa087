"""Markdown for the Dagster UI: hostile paths show literally; the histogram stays short."""

import pytest

from imgdedup_pipeline.core.report import ReportGroup, ReportImage
from imgdedup_pipeline.core.scoring import Thresholds
from imgdedup_pipeline.core.ui_markdown import (
    duplicate_groups_markdown,
    label_histogram_markdown,
    markdown_literal,
    markdown_text,
)

HOSTILE = {
    "image": "![x](https://example.invalid/track.png).jpg",
    "link": "[link](https://example.invalid).jpg",
    "pipes": "a|b|c.jpg",
    "newline": "two\nlines.jpg",
    "html": "<img src=x onerror=alert(1)>.png",
}


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_markdown_text_leaves_no_markup(name):
    escaped = markdown_text(name)
    assert "\n" not in escaped and "<" not in escaped
    # Every markdown special character is escaped: none stands unescaped.
    for special in "[]()!|":
        assert all(escaped[i - 1] == "\\" for i, c in enumerate(escaped) if c == special)


def member(path: str, keeper: bool) -> ReportImage:
    return ReportImage(
        path=path,
        width=8,
        height=8,
        file_bytes=10,
        uniqueness=0.0 if not keeper else 0.2,
        label="duplicate",
        is_keeper=keeper,
        decision="keep" if keeper else "remove",
        reason="exact copy",
    )


def test_groups_keep_the_keeper_first_and_cap_members():
    group = ReportGroup(
        group_id="g",
        label="duplicate",
        members=tuple([member("k.png", True)] + [member(f"c{i}.png", False) for i in range(6)]),
    )
    text = duplicate_groups_markdown([group], lambda path: b"\xff\xd8jpeg", max_members=4)
    assert text.index("![keeper]") < text.index("![remove]")
    assert text.count("data:image/jpeg;base64,") == 4 and "3 more in the HTML report" in text


def test_groups_table_is_intact_with_hostile_names():
    group = ReportGroup(
        group_id="g", label="duplicate", members=(member(HOSTILE["pipes"], True), member(HOSTILE["newline"], False))
    )
    rows = duplicate_groups_markdown([group], lambda path: b"jpeg").splitlines()
    table = [row for row in rows if row.startswith("|")]
    assert len(table) == 4  # thumbnails, separator, paths, decisions: no row broken
    assert all(row.replace("\\|", "").count("|") == 3 for row in table)


def test_a_missing_thumbnail_is_said_not_raised():
    def broken(path):
        raise OSError("gone")

    text = duplicate_groups_markdown(
        [ReportGroup("g", "duplicate", (member("a.png", True), member("b.png", False)))], broken
    )
    assert text.count("no thumbnail \\(OSError\\)") == 2


def test_label_histogram_counts_each_label():
    text = label_histogram_markdown([0.0, 0.0, 0.01, 0.3], Thresholds(1e-4, 0.05))
    assert (
        "| duplicate (≤ 0.0001) | 2 |" in text
        and "| near_duplicate (≤ 0.05) | 1 |" in text
        and "| unique | 1 |" in text
    )
    assert len(text) < 1000


def unescaped_pipes(line: str) -> int:
    count, escaped = 0, False
    for character in line:
        if character == "|" and not escaped:
            count += 1
        escaped = character == "\\" and not escaped
    return count


def test_markdown_table_escapes_every_cell_and_keeps_one_line_per_row():
    import pandas as pd

    from imgdedup_pipeline.core.ui_markdown import markdown_table

    table = pd.DataFrame(
        {
            "path": list(HOSTILE.values()),
            "uniqueness": [0.5, float("nan"), 1e-9, 0.25, 1.0],
            "nearest_path": list(reversed(HOSTILE.values())),
        }
    )
    markdown = markdown_table(table)
    lines = markdown.split("\n")
    assert len(lines) == 2 + len(table)
    assert {unescaped_pipes(line) for line in lines} == {4}  # three cells per row, in every row
    for path in HOSTILE.values():  # each one inline code: nothing inside is markup
        assert markdown_literal(path) in markdown
    assert (
        markdown_literal("a|b|c.jpg") == r"`a\|b\|c.jpg`" and markdown_literal("two\nlines.jpg") == r"`two\nlines.jpg`"
    )


@pytest.mark.parametrize("text, shown", [("x`y``z", "```x`y``z```"), ("`start", "`` `start ``"), ("", "")])
def test_markdown_literal_fences_backticks(text, shown):
    assert markdown_literal(text) == shown

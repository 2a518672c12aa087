"""The duplicates report, opened from disk in a real headless chromium (no server, no network)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.core.report import ReportGroup, ReportImage, render_duplicates_report
from imgdedup_pipeline.core.scoring import Thresholds

# Each planted pair must end up in one group (the report's groups come from `group_id`).
PLANTED_PAIRS = [
    ("photos/animals/chelsea.jpg", "copies/chelsea-backup.jpg"),
    ("photos/coffee.jpg", "copies/coffee-export.png"),
    ("photos/rocket.jpg", "copies/rocket-half.jpg"),
    ("photos/astronaut.png", "copies/astronaut-bright.jpg"),
]


class GroupSections(HTMLParser):
    """Collects each `<section class="group">` of a DOM dump: its attributes and card paths."""

    def __init__(self):
        super().__init__()
        self.groups: list[dict] = []
        self.shown_count = ""
        self._in_counter = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section" and attributes.get("class") == "group":
            self.groups.append({"label": attributes["data-label"], "hidden": "hidden" in attributes, "paths": []})
        elif tag == "figure" and self.groups:
            self.groups[-1]["paths"].append(attributes["data-path"])
        elif tag == "img" and self.groups:
            assert attributes["src"].startswith("data:image/jpeg;base64,"), "thumbnails must be inlined"
        self._in_counter = attributes.get("id") == "shown-count"

    def handle_data(self, data):
        if self._in_counter:
            self.shown_count += data

    def handle_endtag(self, tag):
        self._in_counter = False


def dom_groups(chromium, page: Path, label: str | None = None) -> GroupSections:
    url = page.as_uri() + (f"?label={label}" if label else "")
    parser = GroupSections()
    parser.feed(chromium(url, "--dump-dom", "--virtual-time-budget=3000"))
    return parser


def expected_labels(out_dir: str) -> dict[frozenset, str]:
    """Group (as its set of paths) -> label, from the run's uniqueness.csv: `duplicate` when every
    member is a duplicate of the keeper, else `near_duplicate`."""
    table = pd.read_csv(Path(out_dir) / "uniqueness.csv")
    grouped = table[table["group_id"].notna()].groupby("group_id")
    return {
        frozenset(rows["path"]): "duplicate" if set(rows["relation"].dropna()) <= {"duplicate"} else "near_duplicate"
        for _, rows in grouped
    }


@pytest.fixture(scope="module")
def report_page(ui_run) -> Path:
    settings, result = ui_run
    assert result.success
    page = Path(settings.out_dir) / "report.html"
    assert page.is_file()
    return page


def test_report_loads_and_shows_every_group(report_page, ui_run, chromium, artifacts_dir):
    settings, _ = ui_run
    dom = dom_groups(chromium, report_page)
    expected = expected_labels(settings.out_dir)

    assert len(dom.groups) == len(expected) == len(PLANTED_PAIRS)
    assert not any(g["hidden"] for g in dom.groups)
    assert dom.shown_count == f"{len(expected)} of {len(expected)} groups shown"  # the script ran
    shown = {frozenset(g["paths"]): g["label"] for g in dom.groups}
    assert shown == expected
    for pair in PLANTED_PAIRS:
        assert any(set(pair) <= paths for paths in shown), f"{pair} are not in one group"

    screenshot = artifacts_dir / "report.png"
    screenshot.unlink(missing_ok=True)
    chromium(
        report_page.as_uri(), f"--screenshot={screenshot}", "--window-size=1200,1250", "--virtual-time-budget=3000"
    )
    with Image.open(screenshot) as image:
        assert image.size == (1200, 1250)
        # A blank or error page is one flat colour; the report has photos and coloured badges.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 1000
        # Four groups overflow the window, so the page is drawn down to the last row (headless
        # chromium leaves the bottom of over-tall windows unpainted).
        bottom = image.convert("RGB").crop((0, image.height - 20, image.width, image.height))
        assert len(bottom.getcolors(maxcolors=1_000_000) or []) > 1


@pytest.mark.parametrize("label", ["duplicate", "near_duplicate"])
def test_label_filter_shows_only_groups_with_that_label(report_page, ui_run, chromium, label):
    settings, _ = ui_run
    expected = expected_labels(settings.out_dir)
    dom = dom_groups(chromium, report_page, label)

    visible = {frozenset(g["paths"]) for g in dom.groups if not g["hidden"]}
    assert visible == {paths for paths, group_label in expected.items() if group_label == label}
    assert all(g["hidden"] for g in dom.groups if g["label"] != label)
    assert dom.shown_count == f"{len(visible)} of {len(expected)} groups shown"


def test_label_filter_on_a_report_with_both_labels(chromium, tmp_path):
    """Independent of what the embedder scores: a report with 2 duplicate and 1 near-duplicate
    groups, with an awkward path that must come out escaped."""

    def member(path, uniqueness, keeper, label="duplicate"):
        return ReportImage(path, 64, 48, 2048, uniqueness, label, keeper, "keep" if keeper else "remove", "test")

    groups = [
        ReportGroup("a", "duplicate", (member("a/keep.png", 0.2, True), member('a/<copy>&".png', 0.0, False))),
        ReportGroup("b", "duplicate", (member("b/keep.png", 0.3, True), member("b/copy.png", 0.0, False))),
        ReportGroup(
            "c",
            "near_duplicate",
            (member("c/keep.png", 0.01, True, "near_duplicate"), member("c/crop.png", 0.01, False, "near_duplicate")),
        ),
    ]
    swatch = tmp_path / "swatch.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(swatch)
    report = render_duplicates_report(groups, lambda path: swatch.read_bytes(), Thresholds())
    page = tmp_path / "report.html"
    page.write_text(report.html, encoding="utf-8")

    everything = dom_groups(chromium, page)
    assert [g["label"] for g in everything.groups] == ["duplicate", "duplicate", "near_duplicate"]
    assert everything.groups[0]["paths"][1] == 'a/<copy>&".png'  # escaped in the file, intact in the DOM
    for label, visible in (("duplicate", 2), ("near_duplicate", 1)):
        dom = dom_groups(chromium, page, label)
        assert [g["label"] for g in dom.groups if not g["hidden"]] == [label] * visible
        assert dom.shown_count == f"{visible} of 3 groups shown"

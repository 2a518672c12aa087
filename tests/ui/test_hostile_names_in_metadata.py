"""File names cannot inject markdown into the Dagster UI (issue 13, item 11): with hostile names
under the image root, the `preview` of raw_images and the `lowest_scores` of uniqueness_scores,
opened in a real browser, fetch nothing from outside, hold no link or image made from a name, and
show every path exactly, in its own cell."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from dagster_server import LAUNCH_RUN, RUN_STATUS, RUN_TIMEOUT_S, TERMINAL_STATUSES, DagsterDev, start_dg_dev
from PIL import Image
from skimage import data as skdata

from imgdedup_pipeline.definitions import DEDUP_JOB

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Relative paths ('/' makes folders): an outside image, a link, table breakers, HTML, autolinks.
HOSTILE_PATHS = {
    "![x](https:/example.invalid/track.png).jpg": "astronaut",
    "[link](https:/example.invalid/page).jpg": "coffee",
    "a|b|c.jpg": "chelsea",
    "two\nlines.jpg": "rocket",
    "<b>bold</b> <img src=https:/example.invalid/x.png>.jpg": "camera",
    "www.example.invalid.png": "coins",
    "me@example.invalid.png": "moon",
}


def shown_as(path: str) -> str:
    """How the UI must show a path: exactly, with a newline written as `\\n`."""
    return path.replace("\n", "\\n")


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-names")
    images, out, home = base / "images", base / "out", base / "dagster-home"
    for relative, photo in HOSTILE_PATHS.items():
        target = images / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(getattr(skdata, photo)())).convert("RGB").resize((96, 64)).save(
            target, format="PNG" if relative.endswith(".png") else "JPEG"
        )
    server = start_dg_dev(
        PROJECT_ROOT,
        home,
        out,
        base / "dagster-dev.log",
        IMGDEDUP_IMAGE_ROOT=str(images),
        IMGDEDUP_OUT_DIR=str(out),
        IMGDEDUP_EMBEDDER="offline",
        IMGDEDUP_MAX_DUPLICATE_FRACTION="1.0",
    )
    try:
        params = {
            "selector": {
                "repositoryLocationName": server.repository["location"]["name"],
                "repositoryName": server.repository["name"],
                "jobName": DEDUP_JOB,
            },
            "runConfigData": {"execution": {"config": {"in_process": {}}}},
        }
        launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id, status = launched["run"]["runId"], launched["run"]["status"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while status not in TERMINAL_STATUSES and time.monotonic() < deadline:
            time.sleep(2)
            status = server.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        assert status == "SUCCESS", server.log_tail()
        server.graphql("mutation { setNuxSeen }")  # the first-visit dialog would cover the page
        yield server
    finally:
        server.stop()


def open_markdown_table(server: DagsterDev, browser, asset: str, entry: str):
    """The asset's page with the markdown metadata `entry` opened; returns (page, the element that
    holds the rendered markdown, URLs requested outside the server)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    outside = []

    def guard(route):
        if route.request.url.startswith(server.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(f"{server.url}/assets/{asset}", wait_until="networkidle")
    row = page.locator("tr", has=page.get_by_text(entry, exact=True)).last
    row.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog").last
    dialog.locator("table").first.wait_for()
    page.wait_for_timeout(1000)  # anything the markdown would fetch is requested by now
    return page, dialog, outside


@pytest.mark.parametrize(
    "asset, entry, column", [("raw_images", "preview", "path"), ("uniqueness_scores", "lowest_scores", "path")]
)
def test_hostile_names_show_literally_and_fetch_nothing(hostile_server, browser, asset, entry, column):
    page, dialog, outside = open_markdown_table(hostile_server, browser, asset, entry)
    assert outside == []
    assert dialog.locator("a").count() == 0, dialog.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert dialog.locator("img").count() == 0 and dialog.locator("b").count() == 0
    table = dialog.locator("table").first
    header = table.locator("thead th").all_inner_texts()
    rows = [row.locator("td").all_inner_texts() for row in table.locator("tbody tr").all()]
    assert len(rows) == len(HOSTILE_PATHS)
    assert all(len(cells) == len(header) for cells in rows), rows  # no cell split off or merged
    paths = sorted(cells[header.index(column)] for cells in rows)
    assert paths == sorted(shown_as(path) for path in HOSTILE_PATHS)
    if "nearest_path" in header:
        assert {cells[header.index("nearest_path")] for cells in rows} <= {shown_as(path) for path in HOSTILE_PATHS}
    page.close()

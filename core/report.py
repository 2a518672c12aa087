"""The duplicates report: one self-contained HTML page that shows each duplicate / near-duplicate
group side by side, so a person can check what will be removed before training uses the data.

The page needs no server and no network: thumbnails are inlined as base64 JPEG, the CSS and the
few lines of script are inline, and a Content-Security-Policy forbids every external fetch.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from PIL import Image

from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, Thresholds

THUMBNAIL_SIZE = 160
GROUP_LABELS = (LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE)
DECISION_KEEP, DECISION_REMOVE, DECISION_REVIEW = "keep", "remove", "review"
_REVIEW_REASON_PREFIX = "kept for review"


@dataclass(frozen=True)
class ReportImage:
    """One image of a group as the report shows it.

    Attributes:
        path: relative to the image root, '/'-separated.
        width, height: decoded size in pixels (after EXIF rotation).
        file_bytes: file size in bytes.
        uniqueness: the image's score in [0, 1] (1 = unique).
        label: the image's own label (duplicate / near_duplicate / unique).
        is_keeper: the group's keeper (leader) under the keep policy.
        decision: `keep`, `remove` or `review` (kept, but listed for review).
        reason: why, as the grouping step wrote it.
    """

    path: str
    width: int
    height: int
    file_bytes: int
    uniqueness: float
    label: str
    is_keeper: bool
    decision: str
    reason: str


@dataclass(frozen=True)
class ReportGroup:
    """A duplicate / near-duplicate group: its keeper first, then members by ascending uniqueness.

    Attributes:
        group_id: the keeper's image id.
        label: `duplicate` when every member is a duplicate of the keeper, else `near_duplicate`.
        members: the keeper, then the others sorted by (uniqueness, path).
    """

    group_id: str
    label: str
    members: tuple[ReportImage, ...]

    @property
    def min_uniqueness(self) -> float:
        return min(m.uniqueness for m in self.members)

    @property
    def keeper(self) -> ReportImage:
        return self.members[0]


@dataclass(frozen=True)
class DuplicatesReport:
    """A rendered report.

    Attributes:
        html: the whole page (UTF-8 text).
        groups_shown: groups on the page.
        groups_total: groups in the input (more than `groups_shown` when `max_groups` cut it).
        thumbnail_errors: path -> error text for images whose thumbnail could not be made (the
            page shows the error in place of the thumbnail).
    """

    html: str
    groups_shown: int
    groups_total: int
    thumbnail_errors: dict[str, str]


def report_groups(interchange: pd.DataFrame, images: pd.DataFrame) -> list[ReportGroup]:
    """Collect the duplicate / near-duplicate groups, ordered for review.

    Args:
        interchange: the `duplicate_groups` table (columns image_id, path, uniqueness, label,
            group_id, group_keeper, relation, removed, reason); rows without a group_id are
            singletons and are left out.
        images: `raw_images` (columns image_id, width, height, bytes).

    Returns:
        New `ReportGroup`s sorted by ascending minimum uniqueness, then keeper path, so the
        groups the pipeline is most sure about come first.
    """
    grouped = interchange[interchange["group_id"].notna()].merge(
        images[["image_id", "width", "height", "bytes"]], on="image_id", how="left", validate="one_to_one"
    )
    # One pass over plain columns: a pandas groupby + itertuples per group cost far more per group.
    members_by_group: dict[str, list[ReportImage]] = {}
    relations_by_group: dict[str, set[str]] = {}
    columns = (
        "group_id",
        "path",
        "width",
        "height",
        "bytes",
        "uniqueness",
        "label",
        "group_keeper",
        "removed",
        "reason",
        "relation",
    )
    for group_id, path, width, height, size, uniqueness, label, keeper, removed, reason, relation in zip(
        *(grouped[c].tolist() for c in columns)
    ):
        is_keeper = path == keeper
        members_by_group.setdefault(group_id, []).append(
            ReportImage(
                path=str(path),
                width=int(width),
                height=int(height),
                file_bytes=int(size),
                uniqueness=float(uniqueness),
                label=str(label),
                is_keeper=is_keeper,
                decision=_decision(bool(removed), is_keeper, str(reason)),
                reason=str(reason),
            )
        )
        relations = relations_by_group.setdefault(group_id, set())
        if not pd.isna(relation):
            relations.add(relation)
    groups = []
    for group_id, members in members_by_group.items():
        members.sort(key=lambda m: (not m.is_keeper, m.uniqueness, m.path))
        label = LABEL_DUPLICATE if relations_by_group[group_id] <= {LABEL_DUPLICATE} else LABEL_NEAR_DUPLICATE
        groups.append(ReportGroup(group_id=str(group_id), label=label, members=tuple(members)))
    return sorted(groups, key=lambda g: (g.min_uniqueness, g.keeper.path))


def _decision(removed: bool, is_keeper: bool, reason: str) -> str:
    if removed:
        return DECISION_REMOVE
    if not is_keeper and reason.startswith(_REVIEW_REASON_PREFIX):
        return DECISION_REVIEW
    return DECISION_KEEP


def thumbnail_jpeg(image: Image.Image, max_side: int = THUMBNAIL_SIZE, quality: int = 80) -> bytes:
    """A JPEG thumbnail whose longer side is at most `max_side` pixels (aspect ratio kept).

    Returns:
        JPEG file bytes; the input image is not modified.
    """
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def format_file_size(size_bytes: int) -> str:
    """`532 B`, `12.3 KiB`, `4.1 MiB`: binary units, one decimal above bytes."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    exponent = min(int(math.log(size_bytes, 1024)), 4)
    return f"{size_bytes / 1024**exponent:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"


def render_duplicates_report(
    groups: list[ReportGroup],
    thumbnail: Callable[[str], bytes],
    thresholds: Thresholds,
    settings: dict[str, str] | None = None,
    max_groups: int | None = None,
    max_members: int | None = None,
    thumbnail_workers: int = 2,
) -> DuplicatesReport:
    """Render the groups as one static HTML page.

    Each group is a row of cards (keeper first) with the thumbnail, path, resolution, file size,
    uniqueness, label, the decision and its reason. A `<select>` filters the groups by label
    (`all`, `duplicate`, `near_duplicate`); the page also honours `?label=...` in its URL.

    Args:
        groups: from `report_groups`, in the order to show.
        thumbnail: path -> JPEG bytes. OSError / ValueError (e.g. a file that changed since
            discovery) are caught per image, shown in the page and returned in `thumbnail_errors`.
        thresholds: the label thresholds in force, shown in the header.
        settings: further name -> value facts to show in the header (keep policy, ...).
        max_groups: show at most this many groups (the first ones); None shows all. The page says
            when groups were left out.
        max_members: show at most this many members of a group (keeper first; each inlines a
            thumbnail, so 2,000 copies of one image would make a page of tens of MB); the group
            says how many more it has. None shows all.
        thumbnail_workers: threads calling `thumbnail` (it must be thread-safe): decoding and
            encoding in Pillow release the interpreter lock, and a first run makes every thumbnail.

    Returns:
        A `DuplicatesReport`.
    """
    shown = groups if max_groups is None else groups[:max_groups]
    shown_paths = dict.fromkeys(
        m.path for g in shown for m in (g.members if max_members is None else g.members[:max_members])
    )
    thumbnails = _make_thumbnails(list(shown_paths), thumbnail, thumbnail_workers)
    errors: dict[str, str] = {}
    sections = [
        _render_group(index, group, thumbnails, errors, max_members) for index, group in enumerate(shown, start=1)
    ]
    counts = {label: sum(g.label == label for g in shown) for label in GROUP_LABELS}
    removed = sum(m.decision == DECISION_REMOVE for g in shown for m in g.members)

    facts = {
        "duplicate": f"uniqueness ≤ {thresholds.duplicate:g}",
        "near-duplicate": f"uniqueness ≤ {thresholds.near_duplicate:g}",
        **(settings or {}),
    }
    fact_items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in facts.items())
    options = [f'<option value="all">all groups ({len(shown)})</option>'] + [
        f'<option value="{html.escape(label)}">{html.escape(label)} ({counts[label]})</option>'
        for label in GROUP_LABELS
    ]
    cut_note = (
        f'<p class="note">Showing the {len(shown)} groups with the lowest uniqueness of {len(groups)}; '
        "every group is listed in uniqueness.csv (group_id).</p>"
        if len(shown) < len(groups)
        else ""
    )
    body = "\n".join(sections) if sections else '<p class="empty">No duplicate or near-duplicate groups.</p>'
    page = _PAGE.format(
        summary=html.escape(
            f"{len(shown)} groups ({counts[LABEL_DUPLICATE]} duplicate, {counts[LABEL_NEAR_DUPLICATE]} near-duplicate), "
            f"{sum(len(g.members) for g in shown)} images, {removed} removed"
        ),
        facts=fact_items,
        options="".join(options),
        cut_note=cut_note,
        groups=body,
        total=len(shown),
        script=_SCRIPT,
        style=_STYLE,
    )
    return DuplicatesReport(html=page, groups_shown=len(shown), groups_total=len(groups), thumbnail_errors=errors)


def _make_thumbnails(
    paths: list[str], thumbnail: Callable[[str], bytes], workers: int
) -> dict[str, bytes | OSError | ValueError]:
    """path -> its thumbnail, or the OSError / ValueError that making it raised (shown in the page)."""

    def make(path: str) -> bytes | OSError | ValueError:
        try:
            return thumbnail(path)
        except (OSError, ValueError) as exc:
            return exc

    if workers <= 1 or len(paths) < 2:
        return {path: make(path) for path in paths}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnail") as pool:
        return dict(zip(paths, pool.map(make, paths)))


def _render_group(
    index: int,
    group: ReportGroup,
    thumbnails: dict[str, bytes | OSError | ValueError],
    errors: dict[str, str],
    max_members: int | None = None,
) -> str:
    members = group.members if max_members is None else group.members[:max_members]
    cards = "".join(_render_card(member, thumbnails[member.path], errors) for member in members)
    if len(members) < len(group.members):
        cards += (
            f'<div class="card more">{len(group.members) - len(members)} more in this group, not shown: '
            f"uniqueness.csv lists every member (group_id {html.escape(group.group_id)})</div>"
        )
    title = (
        f"#{index} · {group.label.replace('_', '-')} group · {len(group.members)} images · "
        f"min uniqueness {group.min_uniqueness:.4g} · keeper {group.keeper.path}"
    )
    return (
        f'<section class="group" data-label="{html.escape(group.label)}" data-group-id="{html.escape(group.group_id)}" '
        f'data-min-uniqueness="{group.min_uniqueness!r}">'
        f'<h2><span class="tag tag-{html.escape(group.label)}">{html.escape(group.label)}</span> {html.escape(title)}</h2>'
        f'<div class="cards">{cards}</div></section>'
    )


def _render_card(member: ReportImage, thumbnail: bytes | OSError | ValueError, errors: dict[str, str]) -> str:
    path = html.escape(member.path)
    if isinstance(thumbnail, bytes):
        data = base64.b64encode(thumbnail).decode("ascii")
        picture = f'<img class="thumb" src="data:image/jpeg;base64,{data}" alt="{path}">'
    else:
        errors[member.path] = f"{type(thumbnail).__name__}: {thumbnail}"
        picture = f'<div class="thumb missing">no thumbnail: {html.escape(errors[member.path])}</div>'
    decision = {DECISION_KEEP: "kept", DECISION_REMOVE: "removed", DECISION_REVIEW: "review"}[member.decision]
    keeper = ' <span class="keeper">keeper</span>' if member.is_keeper else ""
    rows = [
        ("path", f'<span class="path">{path}</span>'),
        ("resolution", f"{member.width} × {member.height}"),
        ("file size", f'<span title="{member.file_bytes} bytes">{format_file_size(member.file_bytes)}</span>'),
        ("uniqueness", f"{member.uniqueness:.4g}"),
        ("label", html.escape(member.label)),
        ("decision", f'<span class="decision decision-{member.decision}">{decision}</span>{keeper}'),
        ("reason", html.escape(member.reason)),
    ]
    fields = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<figure class="card card-{member.decision}" data-path="{path}">{picture}<table>{fields}</table></figure>'


_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:16px 24px;color:#1d1d1f;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:14px;font-weight:600;margin:0 0 8px;overflow-wrap:anywhere}
header{margin-bottom:12px}
header ul{margin:4px 0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px 18px;color:#444}
.controls{display:flex;gap:12px;align-items:center;margin:8px 0 16px}
select{font:inherit;padding:2px 6px}
.note,.empty{color:#555}
[hidden]{display:none !important}
.group{background:#fff;border:1px solid #dcdfe4;border-radius:6px;padding:10px 12px;margin-bottom:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{margin:0;width:250px;border:2px solid #dcdfe4;border-radius:6px;padding:8px;background:#fff}
.card-keep{border-color:#2e7d32}.card-remove{border-color:#c62828;background:#fff7f7}.card-review{border-color:#ef8f00}
.thumb{display:block;width:160px;height:160px;object-fit:contain;margin:0 auto 6px;background:#eceff3}
.missing{font-size:11px;color:#c62828;padding:6px;overflow:hidden}
table{border-collapse:collapse;width:100%;font-size:12px}
th{text-align:left;font-weight:600;color:#555;padding:1px 6px 1px 0;vertical-align:top;white-space:nowrap}
td{padding:1px 0;overflow-wrap:anywhere}
.path{font-family:ui-monospace,Menlo,Consolas,monospace}
.tag,.decision,.keeper{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;font-weight:600;color:#fff}
.tag-duplicate{background:#d62728}.tag-near_duplicate{background:#ff7f0e}
.decision-keep{background:#2e7d32}.decision-remove{background:#c62828}.decision-review{background:#ef8f00}
.keeper{background:#37474f}
"""

# Filters groups by their data-label; `?label=near_duplicate` in the URL preselects a label.
_SCRIPT = """
(function () {
  var select = document.getElementById("label-filter");
  var groups = Array.prototype.slice.call(document.querySelectorAll("section.group"));
  var counter = document.getElementById("shown-count");
  function apply() {
    var shown = 0;
    groups.forEach(function (group) {
      var visible = select.value === "all" || group.getAttribute("data-label") === select.value;
      group.hidden = !visible;
      if (visible) { shown += 1; }
    });
    counter.textContent = shown + " of " + groups.length + " groups shown";
    document.body.setAttribute("data-filter", select.value);
  }
  var wanted = new URLSearchParams(window.location.search).get("label");
  if (wanted && Array.prototype.some.call(select.options, function (o) { return o.value === wanted; })) {
    select.value = wanted;
  }
  select.addEventListener("change", apply);
  apply();
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imgdedup: duplicates report</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>Duplicate and near-duplicate groups</h1>
<p id="summary">{summary}. Groups are sorted by their lowest uniqueness (most certain first); in each group the keeper comes first, then the other images by ascending uniqueness.</p>
<ul>{facts}</ul>
</header>
<div class="controls">
<label>Show <select id="label-filter">{options}</select></label>
<span id="shown-count">{total} of {total} groups shown</span>
</div>
{cut_note}
<main id="groups">
{groups}
</main>
<script>{script}</script>
</body>
</html>
"""

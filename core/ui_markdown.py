"""Markdown for the Dagster UI's metadata: what people would rather look at than read.

The UI renders a markdown entry in place when it is shorter than ~1,000 characters and behind a
"[Show Markdown]" button otherwise, so the label histogram is drawn with text bars (short, shown
first) and the duplicate groups, with inline thumbnails, sit one click away. Every path is shown
as inline code (`markdown_literal`), so a file name shows literally: it can add no image, link,
HTML or table cell of its own.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.report import ReportGroup
from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, LABEL_UNIQUE, Thresholds

# Markdown's punctuation (and `:` `@`). Escapes do not stop the UI's autolinks (www.x.y, a@b.c in
# plain text), so paths and other text from files go through `markdown_literal` instead.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>:@])")
BAR_WIDTH = 24


def markdown_text(text: str) -> str:
    """`text` escaped for markdown (and its table cells): shown literally, on one line."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
    return escaped.replace("\r", "\\\\r").replace("\n", "\\\\n")


def markdown_literal(text: str) -> str:
    """`text` as an inline code span for a table cell: shown exactly as it is. Backslash escapes
    are not enough: the UI turns `www.x.y` and `a@b.c` in plain text into links however they are
    escaped, but nothing inside code. A newline shows as `\\n`, and `|` is escaped for the table."""
    text = str(text).replace("\r", "\\r").replace("\n", "\\n").replace("|", "\\|")
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""  # CommonMark strips one space each side
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_cell(value) -> str:
    """One table cell: missing values empty, numbers in 6 significant digits, text as
    `markdown_literal`."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return markdown_text(f"{value:.6g}" if isinstance(value, (float, np.floating)) else str(value))
    return markdown_literal(value)


def markdown_table(table: pd.DataFrame) -> str:
    """`table` (columns and every cell escaped) as a markdown table: a path such as
    `![x](https://…).jpg` or `a|b.jpg` shows literally, in its own cell."""
    header = "| " + " | ".join(markdown_text(str(column)) for column in table.columns) + " |"
    separator = "|" + "---|" * len(table.columns)
    rows = [
        "| " + " | ".join(markdown_cell(value) for value in row) + " |"
        for row in table.itertuples(index=False, name=None)
    ]
    return "\n".join([header, separator, *rows])


def label_histogram_markdown(uniqueness: Sequence[float], thresholds: Thresholds) -> str:
    """Images per label as a text bar chart (a few hundred characters: the UI shows it in place)."""
    values = np.asarray(uniqueness, dtype=float)
    counts = {
        f"{LABEL_DUPLICATE} (≤ {thresholds.duplicate:g})": int((values <= thresholds.duplicate).sum()),
        f"{LABEL_NEAR_DUPLICATE} (≤ {thresholds.near_duplicate:g})": int(
            ((values > thresholds.duplicate) & (values <= thresholds.near_duplicate)).sum()
        ),
        f"{LABEL_UNIQUE}": int((values > thresholds.near_duplicate).sum()),
    }
    largest = max(counts.values(), default=0) or 1
    rows = [f"| {label} | {count} | {'█' * round(BAR_WIDTH * count / largest)} |" for label, count in counts.items()]
    return "\n".join(["| label (uniqueness) | images | |", "|---|---:|---|", *rows])


def duplicate_groups_markdown(
    groups: Sequence[ReportGroup], thumbnail: Callable[[str], bytes], max_members: int = 4
) -> str:
    """The groups side by side: per group a table of thumbnails (keeper first), paths, decisions,
    scores and reasons. `thumbnail(path)` returns JPEG bytes; a failure shows as text."""
    sections = []
    for index, group in enumerate(groups, start=1):
        shown = group.members[:max_members]
        images, paths, decisions = [], [], []
        for member in shown:
            try:
                data = base64.b64encode(thumbnail(member.path)).decode("ascii")
                images.append(f"![{'keeper' if member.is_keeper else member.decision}](data:image/jpeg;base64,{data})")
            except Exception as exc:  # noqa: BLE001 (a thumbnail is a courtesy: say why it is missing)
                images.append(markdown_text(f"no thumbnail ({type(exc).__name__})"))
            paths.append(markdown_literal(member.path))
            decisions.append(f"**{member.decision}** · {member.uniqueness:.3g} · {markdown_literal(member.reason)}")
        more = len(group.members) - len(shown)
        title = f"**{index}. {group.label}, {len(group.members)} images**" + (
            f" ({more} more in the HTML report)" if more > 0 else ""
        )
        sections.append(
            "\n".join(
                [
                    title,
                    "",
                    "| " + " | ".join(images) + " |",
                    "|" + "---|" * len(shown),
                    "| " + " | ".join(paths) + " |",
                    "| " + " | ".join(decisions) + " |",
                ]
            )
        )
    return "\n\n".join(sections) if sections else "No duplicate groups."

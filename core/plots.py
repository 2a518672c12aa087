"""Figures shown in the Dagster UI, rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built on `matplotlib.figure.Figure` directly (not pyplot), so no global figure state
or GUI backend is involved and the functions are safe to call from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.disposable_cache import inputs_digest, result_for_inputs
from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, LABEL_UNIQUE, LABELS, Thresholds

# Uniqueness values at or below this are drawn in a separate "copies" bar: exact copies score 0
# and the floor for everything else is 1e-9, far left of anything a log axis shows usefully.
HISTOGRAM_LOG_FLOOR = 1e-6
HISTOGRAM_BINS_PER_DECADE = 6
LABEL_COLORS = {LABEL_DUPLICATE: "#d62728", LABEL_NEAR_DUPLICATE: "#ff7f0e", LABEL_UNIQUE: "#4c72b0"}


def _labels_of(values: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    return np.where(
        values <= thresholds.duplicate,
        LABEL_DUPLICATE,
        np.where(values <= thresholds.near_duplicate, LABEL_NEAR_DUPLICATE, LABEL_UNIQUE),
    )


def histogram_bin_edges(thresholds: Thresholds) -> np.ndarray:
    """Log-spaced bin edges over (HISTOGRAM_LOG_FLOOR, 1], with both thresholds among the edges.

    Bins are right-closed, (a, b], like the labels (`uniqueness <= threshold`), so no bin straddles
    a threshold and each bin holds a single label.
    """
    decades = int(round(-np.log10(HISTOGRAM_LOG_FLOOR)))
    edges = np.geomspace(HISTOGRAM_LOG_FLOOR, 1.0, decades * HISTOGRAM_BINS_PER_DECADE + 1)
    extra = [t for t in (thresholds.duplicate, thresholds.near_duplicate) if HISTOGRAM_LOG_FLOOR < t < 1.0]
    edges = np.unique(np.concatenate([edges, extra]))
    # Drop edges so close to a threshold that they would leave a sliver bin.
    keep = [edges[0]]
    for edge in edges[1:]:
        if edge in extra or not any(abs(np.log10(edge / t)) < 0.05 for t in extra):
            keep.append(edge)
    return np.array(keep)


def uniqueness_histogram_png(uniqueness: Sequence[float], thresholds: Thresholds, title: str | None = None) -> bytes:
    """A histogram of uniqueness scores, coloured by label, with both thresholds marked.

    The main panel has a log x axis over (1e-6, 1]; a narrow left panel counts the scores at or
    below 1e-6 (exact copies, which score 0). Bars are stacked by label, the label being the one
    the thresholds give (SPEC.md: `duplicate` <= duplicate < `near_duplicate` <= near_duplicate).

    Args:
        uniqueness: scores in [0, 1], any length (an empty input draws an empty, labelled chart).
        thresholds: the label thresholds in force.
        title: figure title; default says how many images are shown.

    Returns:
        PNG file bytes (about 750 x 330 px).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    values = np.clip(np.asarray(uniqueness, dtype=np.float64), 0.0, 1.0)
    labels = _labels_of(values, thresholds)
    edges = histogram_bin_edges(thresholds)
    low = values <= HISTOGRAM_LOG_FLOOR
    # side="left" makes a value equal to an edge fall into the bin that ends there: (a, b].
    bin_of = np.clip(np.searchsorted(edges, values, side="left") - 1, 0, len(edges) - 2)

    figure = Figure(figsize=(7.5, 3.3), dpi=100, layout="constrained")
    left, main = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 11]})
    bottom_main = np.zeros(len(edges) - 1)
    bottom_left = 0.0
    for label in LABELS:
        chosen = labels == label
        counts = np.bincount(bin_of[chosen & ~low], minlength=len(edges) - 1).astype(float)
        # One filled step patch per label (not a Rectangle per bin): drawing is most of the cost.
        main.stairs(
            bottom_main + counts, edges, baseline=bottom_main.copy(), fill=True, color=LABEL_COLORS[label], linewidth=0
        )
        bottom_main += counts
        copies = float(np.count_nonzero(chosen & low))
        left.bar(
            [0], [copies], bottom=[bottom_left], width=0.8, color=LABEL_COLORS[label], edgecolor="white", linewidth=0.4
        )
        bottom_left += copies

    main.set_xscale("log")
    main.set_xlim(HISTOGRAM_LOG_FLOOR, 1.0)
    main.set_xlabel("uniqueness (log scale; half the cosine distance to the nearest other image)")
    for value, name in ((thresholds.duplicate, "duplicate"), (thresholds.near_duplicate, "near-duplicate")):
        if HISTOGRAM_LOG_FLOOR < value <= 1.0:
            _threshold_line(main, value, f"{name} ≤ {value:g}")
    left.set_xticks([0], [f"≤{HISTOGRAM_LOG_FLOOR:g}\n(copies)"], fontsize=8)
    left.set_xlim(-0.6, 0.6)
    left.set_ylabel("images")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.spines[["top", "right"]].set_visible(False)
    main.spines[["top", "right"]].set_visible(False)

    counts_by_label = {label: int(np.count_nonzero(labels == label)) for label in LABELS}
    main.legend(
        handles=[Patch(color=LABEL_COLORS[label], label=f"{label} ({counts_by_label[label]})") for label in LABELS],
        loc="upper left",
        fontsize=8,
        frameon=False,
    )
    figure.suptitle(title or f"Uniqueness of {len(values)} images (1 = unique)", fontsize=10)

    buffer = io.BytesIO()
    # No Software / date chunks, so the same scores always give the same bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


CALIBRATION_LOG_FLOOR = 1e-4
CALIBRATION_COLORS = {"copy": "#2ca02c", "copy_hash": "#98df8a", "other": "#d62728"}


def calibration_histogram_png(
    copy_distance: Sequence[float],
    copy_hash_matched: Sequence[bool],
    other_distance: Sequence[float],
    threshold: float,
    title: str | None = None,
) -> bytes:
    """Both distributions a calibration compares, with the chosen threshold marked.

    Green: edited copy vs its source (light green: the pHash alone already matches them, so the
    threshold does not matter for them); red: image vs the nearest different original. The x axis
    is the embedding distance on the uniqueness scale (half the cosine distance), log-scaled over
    [1e-4, 1]; smaller values are counted in the first bin.

    Args:
        copy_distance: (P,) positive pairs' embedding distances.
        copy_hash_matched: (P,) whether the pHash matches each positive pair.
        other_distance: (N,) negative pairs' embedding distances (+inf values are dropped).
        threshold: the chosen near-duplicate threshold (uniqueness scale).
        title: figure title.

    Returns:
        PNG file bytes (about 750 x 330 px).
    """
    from matplotlib.figure import Figure

    copies = np.clip(np.asarray(copy_distance, dtype=np.float64), CALIBRATION_LOG_FLOOR, 1.0)
    hashed = np.asarray(copy_hash_matched, dtype=bool)
    others = np.asarray(other_distance, dtype=np.float64)
    others = np.clip(others[np.isfinite(others)], CALIBRATION_LOG_FLOOR, 1.0)
    edges = np.geomspace(CALIBRATION_LOG_FLOOR, 1.0, 4 * HISTOGRAM_BINS_PER_DECADE + 1)

    figure = Figure(figsize=(7.5, 3.3), dpi=100, layout="constrained")
    axes = figure.subplots()
    copy_counts = [np.histogram(copies[~hashed], edges)[0], np.histogram(copies[hashed], edges)[0]]
    axes.bar(
        edges[:-1],
        copy_counts[0],
        width=np.diff(edges),
        align="edge",
        color=CALIBRATION_COLORS["copy"],
        alpha=0.8,
        label=f"edited copy vs its source ({int(np.count_nonzero(~hashed))})",
    )
    axes.bar(
        edges[:-1],
        copy_counts[1],
        width=np.diff(edges),
        bottom=copy_counts[0],
        align="edge",
        color=CALIBRATION_COLORS["copy_hash"],
        alpha=0.8,
        label=f"… already matched by pHash ({int(np.count_nonzero(hashed))})",
    )
    axes.step(
        edges,
        np.append(np.histogram(others, edges)[0], 0),
        where="post",
        color=CALIBRATION_COLORS["other"],
        linewidth=1.6,
        label=f"nearest different original ({len(others)})",
    )
    _threshold_line(axes, threshold, f"near-duplicate ≤ {threshold:.4g}")
    axes.set_xscale("log")
    axes.set_xlim(CALIBRATION_LOG_FLOOR, 1.0)
    axes.set_xlabel("embedding distance (uniqueness scale: half the cosine distance; log)")
    axes.set_ylabel("pairs")
    axes.spines[["top", "right"]].set_visible(False)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    figure.suptitle(title or "Calibration: edited copies vs different images", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


UNIQUENESS_HISTOGRAM_FILE = "uniqueness_histogram.png"
# Bump when `uniqueness_histogram_png` draws differently: a stored PNG is reused only under it.
HISTOGRAM_FORMAT = 1
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def read_complete_png(path: Path) -> bytes:
    """A stored PNG's bytes; ValueError when it is cut short or no PNG (the cache then recomputes)."""
    data = path.read_bytes()
    if not (data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)):
        raise ValueError(f"not a complete PNG file ({len(data)} bytes)")
    return data


def cached_uniqueness_histogram(
    uniqueness: pd.Series, thresholds: Thresholds, figures_dir: Path, warn: Callable[[str], None]
) -> bytes:
    """`uniqueness_histogram_png` of the scores, or the same PNG stored in `figures_dir` by an
    earlier run whose scores, thresholds and matplotlib were the same (matplotlib's import and
    drawing are most of a no-change rerun's scoring step)."""
    digest = inputs_digest(
        HISTOGRAM_FORMAT,
        version("matplotlib"),
        uniqueness.to_numpy(dtype="float64"),
        float(thresholds.duplicate),
        float(thresholds.near_duplicate),
    )
    png, _ = result_for_inputs(
        figures_dir,
        UNIQUENESS_HISTOGRAM_FILE,
        digest,
        lambda: uniqueness_histogram_png(uniqueness, thresholds),
        read=read_complete_png,
        write=lambda data, path: Path(path).write_bytes(data),
        warn=warn,
    )
    return png


def _threshold_line(axes, value: float, text: str) -> None:
    """A dashed vertical line at a threshold, labelled along it at the top of the plot."""
    axes.axvline(value, color="black", linestyle="--", linewidth=1.0)
    axes.annotate(
        text,
        xy=(value, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(-3, -3),
        textcoords="offset points",
        ha="right",
        va="top",
        rotation=90,
        fontsize=8,
    )

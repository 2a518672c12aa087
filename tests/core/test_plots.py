"""Tests for core.plots: the uniqueness histogram is a PNG, deterministic, and bins respect the
thresholds (`uniqueness <= threshold`)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgdedup_pipeline.core.plots import HISTOGRAM_LOG_FLOOR, histogram_bin_edges, uniqueness_histogram_png
from imgdedup_pipeline.core.scoring import Thresholds


@pytest.mark.parametrize(
    "values",
    [[], [0.0], [0.0, 0.0, 1e-9, 5e-5, 0.01, 0.05, 0.3, 1.0], list(np.linspace(0, 1, 500))],
    ids=["empty", "one-copy", "mixed", "many"],
)
def test_histogram_is_a_png_and_deterministic(values):
    first = uniqueness_histogram_png(values, Thresholds())
    assert first == uniqueness_histogram_png(values, Thresholds())
    with Image.open(io.BytesIO(first)) as image:
        assert image.format == "PNG" and image.size == (750, 330)


@pytest.mark.parametrize(
    "thresholds",
    [Thresholds(), Thresholds(1e-3, 0.2), Thresholds(0.0, 0.05)],
    ids=["default", "looser", "zero-duplicate"],
)
def test_thresholds_are_bin_edges(thresholds):
    edges = histogram_bin_edges(thresholds)
    assert edges[0] == HISTOGRAM_LOG_FLOOR and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    for value in (thresholds.duplicate, thresholds.near_duplicate):
        if value > HISTOGRAM_LOG_FLOOR:
            assert value in edges

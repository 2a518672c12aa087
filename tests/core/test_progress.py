"""Tests for core.progress: readable progress lines and a throttle that does not spam the log."""

from __future__ import annotations

import pytest

from imgdedup_pipeline.core.progress import format_duration, progress_message, should_report


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (42.4, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")],
    ids=["zero", "seconds", "minutes", "hours"],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_message_has_done_total_rate_and_eta():
    assert progress_message(64, 1000, 5.12) == "embedded 64/1000 images (6%), 12.5 images/s, ETA 1 min 15 s"
    assert progress_message(1000, 1000, 80) == "embedded 1000/1000 images (100%), 12.5 images/s, done"
    assert progress_message(0, 10, 0) == "embedded 0/10 images (0%), rate not known yet"


def test_the_rate_leaves_out_the_first_batch_that_loaded_the_model():
    # 32 images in 8 s with the model's load, then 64 more in 2 s: 32 images/s, not 9.6.
    assert (
        progress_message(96, 1000, 10.0, warmup=(32, 8.0)) == "embedded 96/1000 images (10%), 32.0 images/s, ETA 28 s"
    )
    assert (
        progress_message(16, 16, 8.0, warmup=(16, 8.0))
        == "embedded 16/16 images (100%) in 8 s, model load included, done"
    )
    assert (
        progress_message(32, 1000, 8.0, warmup=(32, 8.0))
        == "embedded 32/1000 images (3%) in 8 s, model load included, rate not known yet"
    )


def test_throttle_reports_first_last_and_then_every_interval():
    # 100 batches of 1 s each: first, every 10 s, and the last one.
    reported, last = [], None
    for step in range(1, 101):
        if should_report(float(step), last, step, 100, interval_s=10):
            reported.append(step)
            last = float(step)
    assert reported == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 100]

"""Progress messages for long loops (embedding): done / total, throughput and ETA."""

from __future__ import annotations

PROGRESS_INTERVAL_S = 10.0


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`: short and readable in a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_message(
    done: int, total: int, elapsed_s: float, unit: str = "images", warmup: tuple[int, float] | None = None
) -> str:
    """One progress line, e.g. `embedded 64/1000 images (6%), 12.5 images/s, ETA 1 min 15 s`.

    Args:
        done: items finished, 0 <= done <= total.
        total: items in the whole loop.
        elapsed_s: seconds since the loop started.
        unit: what the items are called.
        warmup: (items, seconds) of the first batch when it also loaded the model: the rate is
            then taken from the batches after it, so that a model's load (or export) does not pass
            for the throughput; with nothing after it, the line says the load is included.
    """
    percent = f" ({100 * done / total:.0f}%)" if total else ""
    if done <= 0 or elapsed_s <= 0:
        return f"embedded {done}/{total} {unit}{percent}, rate not known yet"
    if warmup is not None:
        warmup_done, warmup_s = warmup
        if done <= warmup_done or elapsed_s <= warmup_s:
            remaining = "done" if done >= total else "rate not known yet"
            return f"embedded {done}/{total} {unit}{percent} in {format_duration(elapsed_s)}, model load included, {remaining}"
        done_after, elapsed_after = done - warmup_done, elapsed_s - warmup_s
        rate = done_after / elapsed_after
    else:
        rate = done / elapsed_s
    remaining = "done" if done >= total else f"ETA {format_duration((total - done) / rate)}"
    return f"embedded {done}/{total} {unit}{percent}, {rate:.1f} {unit}/s, {remaining}"


def should_report(
    now_s: float, last_reported_s: float | None, done: int, total: int, interval_s: float = PROGRESS_INTERVAL_S
) -> bool:
    """Report the first step, the last one, and otherwise at most once every `interval_s` seconds.

    Args:
        now_s: the current monotonic time.
        last_reported_s: monotonic time of the last report, None before the first.
        done, total: progress so far.
        interval_s: minimum seconds between two reports in the middle of the loop.
    """
    return last_reported_s is None or done >= total or now_s - last_reported_s >= interval_s

"""`imgdedup` (cli.main) with test hooks around the vector-table write, for the crash and
concurrency tests. Nothing here changes what the pipeline computes; the hooks only choose *when*
the process dies or waits, which a test cannot time from outside.

Environment:
    IMGDEDUP_TEST_KILL_AT: `before_merge` or `after_merge`: SIGKILL this process on entering
        `LanceDBResource.insert_missing`, or right after its merge_insert committed (before the
        embedding checkpoints are cleared and before Dagster records the step's success);
        `before_clean_export`: on entering the write of clean.csv (after duplicates.csv).
    IMGDEDUP_TEST_WRITE_LOG: append `<pid> enter|exit <time>` lines around each write.
    IMGDEDUP_TEST_RENDEZVOUS: a folder; each writer registers there on entering and, before it
        merges, waits for a second writer: one that entered the write too (then two unserialised
        writers are certain to write at the same time), or one whose run waits for the
        `lancedb_writer` pool slot that this one holds (then the pool is doing its job). It gives
        up after IMGDEDUP_TEST_RENDEZVOUS_S seconds (default 120).

Usage: python tests/robustness/cli_driver.py run --images DIR --out DIR ...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from imgdedup_pipeline import cli  # noqa: E402
from imgdedup_pipeline.resources.lancedb import WRITER_POOL, LanceDBResource  # noqa: E402
from imgdedup_pipeline.resources.output_store import OutputStoreResource  # noqa: E402

_real_insert_missing = LanceDBResource.insert_missing


def _log(event: str) -> None:
    log = os.environ.get("IMGDEDUP_TEST_WRITE_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {event} {time.time():.6f}\n")


def _meet_second_writer() -> None:
    folder = os.environ.get("IMGDEDUP_TEST_RENDEZVOUS")
    if not folder:
        return
    import dagster as dg

    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + float(os.environ.get("IMGDEDUP_TEST_RENDEZVOUS_S", "120"))
    with dg.DagsterInstance.get() as instance:  # the CLI set DAGSTER_HOME
        storage = instance.event_log_storage
        while time.monotonic() < deadline:
            if len(list(Path(folder).iterdir())) >= 2:
                return
            if storage.supports_global_concurrency_limits and storage.get_concurrency_info(WRITER_POOL).pending_run_ids:
                return
            time.sleep(0.05)


def insert_missing_with_hooks(self, model_id, hashes, vectors):
    _log("enter")
    kill_at = os.environ.get("IMGDEDUP_TEST_KILL_AT")
    if kill_at == "before_merge":
        os.kill(os.getpid(), signal.SIGKILL)
    _meet_second_writer()
    result = _real_insert_missing(self, model_id, hashes, vectors)
    _log("exit")
    if kill_at == "after_merge":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


LanceDBResource.insert_missing = insert_missing_with_hooks
_real_write_table = OutputStoreResource.write_table


def write_table_with_hooks(self, file_name, *args, **kwargs):
    if file_name == "clean.csv" and os.environ.get("IMGDEDUP_TEST_KILL_AT") == "before_clean_export":
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_write_table(self, file_name, *args, **kwargs)


OutputStoreResource.write_table = write_table_with_hooks

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))

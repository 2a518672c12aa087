"""`imgdedup`: run the dedup graph on a folder from the command line (same Definitions as the UI).

Exit codes: 0 success (every check passed), 1 a blocking check failed or a step failed,
2 invalid configuration (nothing was run).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import sys
from pathlib import Path

from imgdedup_pipeline.core.settings import FIELDS as SETTINGS_FIELDS
from imgdedup_pipeline.core.settings import (
    PROJECT_ROOT,
    Settings,
    SettingsError,
    choices,
    cli_flag,
    env_var,
    field_extra,
    parse_value,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
RUN_SOURCE_TAG = "imgdedup/launched_from"
# host:pid:start-time of the process executing a CLI run, so that a later CLI start can tell that
# the run's process is gone (SIGKILL, OOM, power loss) and release what the run still holds.
RUN_PROCESS_TAG = "imgdedup/process"
# The collector's thresholds while a command runs. At Python's default (700, 10, 10) importing
# Dagster, LanceDB and GX (hundreds of thousands of objects) sets off several full collections, a
# visible share of a small rerun (bench/rerun.py); from 10,000 the young generation is collected
# far less often. Cycles are still collected, in the same three generations.
GC_THRESHOLDS = (10_000, 10, 10)


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or the project-local `.dagster_home` (with the repo's dagster.yaml), so
    CLI runs land in the same instance the UI reads."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        try:
            config.symlink_to(PROJECT_ROOT / "dagster.yaml")
        except FileExistsError:  # another imgdedup process started at the same moment linked it
            pass
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def open_instance():
    """The Dagster instance under $DAGSTER_HOME (see `ensure_dagster_home`), its storage created
    under a file lock: two processes creating a fresh SQLite instance at the same moment crash, or
    leave it with two schema heads that no later run can open."""
    import fcntl

    import dagster as dg

    home = ensure_dagster_home()
    with open(home / ".imgdedup-instance.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        instance = dg.DagsterInstance.get()
        # Each storage creates (and stamps) its schema when first used: do all of it under the lock.
        instance.get_runs(limit=1)
        instance.event_log_storage.get_pool_limits()
        instance.schedule_storage.all_instigator_state()
    return instance


# The settings each command takes as flags; names, help, defaults and choices come from `Settings`.
EMBEDDING_SETTINGS = ("embedder", "model", "pooling", "offline_pooling", "batch_size", "device", "precision", "runtime")
RUN_SETTINGS = (
    "image_root",
    "out_dir",
    *EMBEDDING_SETTINGS,
    "lancedb_uri",
    "duplicate_threshold",
    "near_duplicate_threshold",
    "keep_policy",
    "near_duplicate_action",
    "max_duplicate_fraction",
    "hash_threshold_bits",
    "max_pixels",
    "neighbor_search",
)
CALIBRATE_SETTINGS = (
    "image_root",
    "out_dir",
    *EMBEDDING_SETTINGS,
    "calibration_sample_size",
    "calibration_seed",
    "target_precision",
    "hash_threshold_bits",
    "max_pixels",
)


def _flag_value(name: str):
    """argparse's `type` for the flag of setting `name`: parsed and checked by `Settings`."""

    def parse(raw: str):
        try:
            value = parse_value(name, raw)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError("; ".join(exc.problems)) from None
        return str(Path(value).resolve()) if field_extra(name).get("path") else value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def add_setting_argument(
    parser: argparse.ArgumentParser, name: str, default=None, default_text: str | None = None
) -> None:
    """The flag of setting `name`, from its `Settings` field: name, help, choices and default.

    The flag's own default is None (`default` for a command that chooses another), so that an
    environment variable `IMGDEDUP_<FIELD>` applies unless the flag is given."""
    field, extra = SETTINGS_FIELDS[name], field_extra(name)
    allowed = choices(name)
    shown = default_text or (default if default is not None else field.default)
    notes = (
        [f"default {shown:g}" if isinstance(shown, float) else f"default {shown}"]
        if shown is not None and not extra.get("required")
        else []
    )
    if default is None:  # a command's own default wins over the environment
        notes.append(env_var(name))
    flag = cli_flag(name)
    if flag is None:
        raise ValueError(f"setting {name!r} has no command-line flag: it is set with {env_var(name)} only")
    parser.add_argument(
        flag,
        dest=name,
        type=_flag_value(name),
        default=default,
        required=bool(extra.get("required")),
        metavar="{" + ",".join(allowed) + "}" if allowed else extra.get("metavar"),
        help=f"{field.description} ({'; '.join(notes)})",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The command's settings: its flags over the environment over the defaults, validated once."""
    return Settings.load(**{name: getattr(args, name) for name in args.settings_fields})


def process_token(pid: int | None = None) -> str:
    """`host:pid:start` for a process (this one by default); `start` is its start time in clock
    ticks since boot (Linux /proc), empty where /proc does not exist or the process is gone."""
    import socket

    pid = os.getpid() if pid is None else pid
    try:
        # Field 22 of /proc/PID/stat; the command name (field 2) may contain spaces, so split after it.
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = ""
    return f"{socket.gethostname()}:{pid}:{start}"


def process_is_gone(token: str) -> bool:
    """True when the process named by a `process_token` has certainly ended: same host, and the pid
    no longer exists or now belongs to a process started at another time (pid reuse)."""
    import socket

    host, pid_text, start = (token.rsplit(":", 2) + ["", ""])[:3]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's run: nothing here can tell
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    return bool(start) and process_token(pid).rsplit(":", 1)[1] != start


def release_abandoned_runs(instance) -> list[str]:
    """Mark this instance's CLI runs whose process died as failed, and free the concurrency-pool
    slots held by runs that are no longer running, so that a killed run cannot block the next
    writer of the vector table forever (a slot is only released by the run that claimed it).

    Returns:
        The ids of the runs whose slots were released.
    """
    import dagster as dg

    released = []
    for run in instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    ):
        token = run.tags.get(RUN_PROCESS_TAG)
        if token and process_is_gone(token):
            instance.report_run_failed(
                run, message=f"the process that executed this run ({token}) ended without finishing it (killed?)"
            )
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        for run_id in storage.get_concurrency_run_ids():
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                storage.free_concurrency_slots_for_run(run_id)
                released.append(run_id)
    for run_id in released:
        print(f"released the concurrency slots of run {run_id}, which is no longer running", file=sys.stderr)
    return released


def warn_if_writes_are_not_serialized(instance) -> bool:
    """Print a warning when the instance gives the vector-table writers' pool no limit (a
    DAGSTER_HOME with its own dagster.yaml): concurrent runs could then duplicate rows.

    Returns:
        True when a warning was printed.
    """
    from imgdedup_pipeline.resources.lancedb import WRITER_POOL

    storage = instance.event_log_storage
    config = instance.get_concurrency_config().pool_config
    limited = storage.supports_global_concurrency_limits and (
        config.default_pool_limit is not None or any(pool.name == WRITER_POOL for pool in storage.get_pool_limits())
    )
    if limited and (config.pool_granularity is None or config.pool_granularity.value == "op"):
        return False
    print(
        f"warning: the Dagster instance in {os.environ.get('DAGSTER_HOME')} sets no op-level limit for the pool "
        f"{WRITER_POOL!r}, so concurrent runs on one vector table are not serialized and could duplicate rows; "
        f"add `concurrency: pools: default_limit: 1` to its dagster.yaml (see the repo's) or run "
        f"`dagster instance concurrency set {WRITER_POOL} 1`",
        file=sys.stderr,
    )
    return True


class _WithoutStackTraces(logging.Formatter):
    """Dagster's console lines, with the stack traces of failures cut off: an expected failure (a
    gate, a missing model) is explained in one line; `--verbose` keeps the traces."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).split("\n\nStack Trace:", 1)[0]


def terminal_logger_definition():
    """The console logger of CLI runs: Dagster's line format on stderr; config `log_level` and
    `tracebacks` (print failures' stack traces)."""
    import dagster as dg

    @dg.logger(
        {"log_level": dg.Field(str, default_value="INFO"), "tracebacks": dg.Field(bool, default_value=False)},
        description="imgdedup's terminal log",
    )
    def terminal_logger(init_context) -> logging.Logger:
        config = init_context.logger_config
        logger = logging.Logger("dagster", level=config["log_level"])
        handler = logging.StreamHandler(sys.stderr)
        fmt, datefmt = "%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"
        handler.setFormatter(
            logging.Formatter(fmt, datefmt) if config["tracebacks"] else _WithoutStackTraces(fmt, datefmt)
        )
        logger.addHandler(handler)
        return logger

    return terminal_logger


def run_pipeline(settings: Settings, source: str = "cli", log_level: str = "INFO", verbose: bool = False):
    """Materialize the whole graph for `settings` in the persistent Dagster instance.

    Returns:
        The `ExecuteInProcessResult`.
    """
    from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions

    job = (
        build_definitions(settings)
        .resolve_job_def(DEDUP_JOB)
        .with_logger_defs({"console": terminal_logger_definition()})
    )
    with open_instance() as instance:
        warn_if_writes_are_not_serialized(instance)
        release_abandoned_runs(instance)
        return job.execute_in_process(
            instance=instance,
            tags={RUN_SOURCE_TAG: source, RUN_PROCESS_TAG: process_token()},
            raise_on_error=False,
            # Progress and warnings on the terminal; the full debug log stays in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": log_level, "tracebacks": verbose}}}},
        )


def report_step_failures(result, verbose: bool, gates_reported: bool = False) -> list[tuple[str, str]]:
    """Print one line per failed step, naming the error the step's code raised (not Dagster's
    wrapper), with its stack trace when `verbose`; returns (step, error) pairs.

    `gates_reported`: the caller prints failed gates with their values (`summarize`), so a step
    failed by its gate (dagster.Failure from checks/gates.py, or Dagster's own
    DagsterAssetCheckFailedError) is left to it."""
    failed_steps = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is None or (gates_reported and error.cls_name in ("DagsterAssetCheckFailedError", "Failure")):
            continue
        cause = error
        while cause.cause is not None and cause.cls_name in (
            "DagsterExecutionStepExecutionError",
            "DagsterUserCodeExecutionError",
        ):
            cause = cause.cause
        failed_steps.append((event.step_key, f"{cause.cls_name}: {cause.message.strip()}"))
        print(f"FAILED step {event.step_key}: {cause.cls_name}: {cause.message.strip()[:2000]}", file=sys.stderr)
        if verbose:
            print("".join(cause.stack), file=sys.stderr)
    return failed_steps


def summarize(result, settings: Settings, verbose: bool = False) -> int:
    """Print what happened and where the results are; return the exit code.

    Every failed check is printed with its observed value and threshold, every asset the run
    planned but did not materialize is listed as held back, and the last lines state the outcome in
    words: what was written, which gate failed (observed against limit), what it held back and the
    setting that changes the limit.
    """
    import json

    out = Path(settings.out_dir)
    evaluations = result.get_asset_check_evaluations()
    failed_checks = [evaluation for evaluation in evaluations if not evaluation.passed]
    for evaluation in failed_checks:
        print(
            f"FAILED check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            + (" (blocking)" if evaluation.blocking else "")
        )
        for key in ("observed_value", "threshold", "unexpected_count", "failed_expectations"):
            value = evaluation.metadata[key].value if key in evaluation.metadata else None
            if value is not None:
                print(f"    {key}: {json.dumps(value, default=str)}")
    failed_steps = report_step_failures(result, verbose, gates_reported=True)
    from imgdedup_pipeline.definitions import ALL_ASSETS

    # The run targets its asset selection, or (none given) every asset of the dedup job (the
    # calibration asset is not one: it runs on demand).
    targeted = set(result.dagster_run.asset_selection or {key for assets in ALL_ASSETS for key in assets.keys})
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    held_back = sorted(key.to_user_string() for key in targeted - materialized)

    if settings.shared_storage_uri:
        print_shared_exports(result.run_id, settings.shared_storage_uri)
    else:
        print_local_exports(result.run_id, out)
    print(f"checks: {len(evaluations) - len(failed_checks)} passed, {len(failed_checks)} failed")
    print(f"dagster run {result.run_id} (DAGSTER_HOME={os.environ.get('DAGSTER_HOME')})")
    if timings := step_seconds_line(result.run_id):
        print(timings)
    if held_back:
        print("held back (not materialized): " + ", ".join(held_back))
    for line in outcome_lines(result, failed_checks, failed_steps, held_back, verbose):
        print(line)
    return EXIT_OK if result.success and not failed_checks else EXIT_FAILED


def print_local_exports(run_id: str, out: Path) -> None:
    """The scores' counts and the paths of the published exports under `out`."""
    import pandas as pd

    from imgdedup_pipeline.core.export_set import published_run_id

    # The top-level exports are the published set (core/export_set.py): this run's only when it
    # published one; its manifest says which run wrote them, so nothing is claimed by guesswork.
    published = published_run_id(out)
    uniqueness_csv = out / "uniqueness.csv"
    if published == run_id and uniqueness_csv.exists():
        table = pd.read_csv(uniqueness_csv)
        counts = table["label"].value_counts().to_dict()
        removed = int(table["removed"].sum()) if "removed" in table else 0
        print(
            f"scored {len(table)} images: "
            + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("duplicate", "near_duplicate", "unique"))
            + f"; {removed} removed"
        )
    export_names = (
        "uniqueness.csv",
        "duplicates.csv",
        "clean.csv",
        "rejected.csv",
        "training_manifest.csv",
        "report.html",
    )
    if published != run_id:
        print(
            "this run published no exports"
            + (f"; the files below are those of the earlier run {published}" if published else "")
        )
    for name in export_names:
        if published is not None and (out / name).is_file():
            stale = "" if published == run_id else f"  (not written by this run: from the earlier run {published})"
            print(f"  {name:21s} {out / name}{stale}")


def print_shared_exports(run_id: str, shared_storage_uri: str) -> None:
    """Where the published export set is on the shared storage (core/shared_exports.py)."""
    from imgdedup_pipeline.core.export_set import EXPORTS_DIR
    from imgdedup_pipeline.core.object_store import folder_at
    from imgdedup_pipeline.core.shared_exports import CURRENT_POINTER, published_manifest

    shared = folder_at(shared_storage_uri)
    manifest = published_manifest(shared)
    if manifest is None or manifest["run_id"] != run_id:
        print("this run published no exports")
        return
    folder = shared.uri(EXPORTS_DIR, run_id)
    print(f"exports published in {folder} (named by {shared.uri(EXPORTS_DIR, CURRENT_POINTER)}):")
    for name in manifest["files"]:
        print(f"  {name:21s} {folder}/{name}")


def step_seconds_line(run_id: str) -> str | None:
    """`seconds per step: discover_raw_images 1.2, ...` in the order the steps started, from the
    run's event log (the UI's run timeline shows the same); None when the log has no step times."""
    with open_instance() as instance:
        stats = [s for s in instance.get_run_step_stats(run_id) if s.start_time is not None and s.end_time is not None]
    if not stats:
        return None
    stats.sort(key=lambda s: s.start_time)
    total = max(s.end_time for s in stats) - min(s.start_time for s in stats)
    return f"seconds per step ({total:.1f} s from the first step's start): " + ", ".join(
        f"{s.step_key} {s.end_time - s.start_time:.1f}" for s in stats
    )


def outcome_lines(
    result, failed_checks: list, failed_steps: list[tuple[str, str]], held_back: list[str], verbose: bool
) -> list[str]:
    """The last lines of a run's summary: its outcome in words."""
    materialized = {event.asset_key.to_user_string(): event for event in result.get_asset_materialization_events()}
    lines = []
    if "clean_dataset" in materialized:
        books = materialized["clean_dataset"].materialization.metadata.get("accounting")
        if books is not None:
            books = books.value
            lines.append(
                f"dedup done: {books['discovered']} files discovered: {books['clean']} clean, {books['duplicates']} removed as duplicates, "
                f"{books['rejected']} rejected (clean.csv, duplicates.csv, rejected.csv)"
            )
            if books["discovered"] == 0:
                from imgdedup_pipeline.core.images import IMAGE_EXTENSIONS

                lines.append(
                    f"note: no file with an image extension ({' '.join(sorted(IMAGE_EXTENSIONS))}) under --images: is it the right folder?"
                )
    for evaluation in failed_checks:
        metadata = evaluation.metadata
        lines.append(
            f"GATE FAILED: {evaluation.check_name}: {evaluation.description or 'see the check in the Dagster UI'}"
        )
        if "held_back" in metadata:
            lines.append(f"  held back: {metadata['held_back'].value}")
        if "limit_setting" in metadata:
            lines.append(f"  to change the limit: {metadata['limit_setting'].value}")
    for step, message in failed_steps:
        first_line = message.splitlines()[0] if message else ""
        lines.append(
            f"STEP FAILED: {step}: {first_line[:500]}"
            + ("" if verbose else "  (rerun with --verbose for the traceback)")
        )
    if not failed_checks and not failed_steps and result.success:
        lines.append("OK: every check passed; training_manifest.csv is ready for training")
    elif "training_manifest" in held_back:
        lines.append("result: training_manifest was NOT written (exit 1)")
    return lines


def settings_are_valid(settings: Settings) -> bool:
    """Print every configuration problem (what to fix) before any work starts; True when none.
    The model is checked last, and only when nothing else is wrong (it imports transformers)."""
    problems = settings.problems()
    if not problems and (model := settings.model_problem()) is not None:
        problems.append(model)
    for problem in problems:
        print(f"config error: {problem}", file=sys.stderr)
    return not problems


def command_run(args: argparse.Namespace) -> int:
    from imgdedup_pipeline.core.output_folder import claim_output_folder

    settings = settings_from_args(args)
    if not settings_are_valid(settings):
        return EXIT_CONFIG
    try:
        claim_output_folder(settings.out_dir)
    except ValueError as exc:  # changed since it was checked a moment ago
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    result = run_pipeline(settings, verbose=args.verbose)
    return summarize(result, settings, verbose=args.verbose)


def command_demo(args: argparse.Namespace) -> int:
    from imgdedup_pipeline.core.sample import build_sample_set

    out = Path(args.out).resolve()
    sample = build_sample_set(out / "sample-images")
    print(f"sample set: {len(sample['files'])} files in {sample['root']}")
    if args.sample_only:
        return EXIT_OK
    # The sample is mostly planted copies, so the raw-data gate (default 0.5) would rightly block
    # it; the demo raises it to show the whole graph. Pass a lower value to see the gate fire.
    settings = Settings.load(
        image_root=sample["root"],
        out_dir=str(out / "results"),
        embedder=args.embedder,
        max_duplicate_fraction=args.max_duplicate_fraction,
    )
    print(f"max_duplicate_fraction for the demo: {settings.max_duplicate_fraction}")
    return summarize(run_pipeline(settings, source="cli-demo"), settings)


def command_calibrate(args: argparse.Namespace) -> int:
    """Discover the images, calibrate the near-duplicate threshold for the model and store it."""
    from imgdedup_pipeline.core.calibration import read_calibrations
    from imgdedup_pipeline.definitions import CALIBRATION_JOB, build_definitions, model_id_for

    settings = settings_from_args(args)
    if not settings_are_valid(settings):
        return EXIT_CONFIG
    job = (
        build_definitions(settings)
        .resolve_job_def(CALIBRATION_JOB)
        .with_logger_defs({"console": terminal_logger_definition()})
    )
    with open_instance() as instance:
        release_abandoned_runs(instance)
        result = job.execute_in_process(
            instance=instance,
            tags={RUN_SOURCE_TAG: "cli-calibrate", RUN_PROCESS_TAG: process_token()},
            raise_on_error=False,
            run_config={
                "ops": {"embedding_thresholds": {"config": {"force": args.force}}},
                "loggers": {"console": {"config": {"log_level": "WARNING", "tracebacks": args.verbose}}},
            },
        )
    if report_step_failures(result, args.verbose) or not result.success:
        if not args.verbose:
            print("(rerun with --verbose for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    model_id = model_id_for(settings)
    if model_id is None:
        raise RuntimeError(f"embedder {settings.embedder!r} cannot be built, so its calibration cannot be shown")
    record = read_calibrations(settings.thresholds_file)[model_id]
    print(f"near-duplicate threshold for {model_id}: {record['near_duplicate_threshold']:g}")
    print(
        f"  estimated precision {record['precision']:.3f} (target {record['target_precision']}), recall {record['recall']:.3f} "
        f"of edited copies; {record['sample_size']} images sampled (seed {record['seed']}), hash_threshold_bits {record['hash_threshold_bits']}"
    )
    print(
        f"  stored in {settings.thresholds_file}; `imgdedup run --out {settings.out_dir}` uses it unless --near-duplicate-threshold is given"
    )
    print(f"dagster run {result.run_id} (DAGSTER_HOME={os.environ.get('DAGSTER_HOME')})")
    return EXIT_OK


def similar_images(out_dir: Path, path_given: str, k: int) -> list[dict]:
    """The k images nearest to `path_given` (relative to the image root, or absolute) in the
    vector table of the run in `out_dir`.

    Raises:
        ValueError: no earlier run in `out_dir`, or the path is not among its images.
    """
    import json

    import pandas as pd

    from imgdedup_pipeline.resources.lancedb import LanceDBResource

    manifest_path = out_dir / "state" / "vectors.json"
    if not manifest_path.exists():
        raise ValueError(
            f"no vector table recorded in {out_dir}; run `imgdedup run --images DIR --out {out_dir}` first"
        )
    manifest = json.loads(manifest_path.read_text())
    images = pd.read_parquet(out_dir / "state" / manifest["catalog"])
    paths_by_hash = images.groupby("pixel_hash")["path"].apply(sorted).to_dict()
    path = image_path_in_root(path_given, Path(manifest["image_root"]))
    query = images.loc[images["path"] == path, "pixel_hash"]
    if query.empty:
        raise ValueError(f"{path_given!r} is not an image of the last run on {manifest['image_root']}")
    lancedb = LanceDBResource(uri=manifest["uri"])
    return lancedb.nearest_paths(manifest["model_id"], query.iloc[0], paths_by_hash, k, exclude_path=path)


def image_path_in_root(path_given: str, image_root: Path) -> str:
    """The catalog's form of an image path: relative to the image root, with `/`. An absolute path
    (or one relative to the current folder that exists) inside the root is made relative to it."""
    given = Path(path_given).expanduser()
    if given.is_absolute() or given.exists():
        try:
            return given.resolve().relative_to(image_root.resolve()).as_posix()
        except ValueError:
            pass
    return path_given.replace("\\", "/").removeprefix("./")


def command_similar(args: argparse.Namespace) -> int:
    if args.k < 1:
        print(f"config error: --k must be at least 1, got {args.k}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        rows = similar_images(Path(args.out).resolve(), args.path, args.k)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # The distance is on the uniqueness scale (half the cosine distance), so it reads against the
    # thresholds: at most --duplicate-threshold is a duplicate of the image asked about.
    print("distance  path")
    for row in rows:
        print(f"{row['uniqueness_distance']:.6f}  {row['path']}")
    return EXIT_OK


def command_serve_reports(args: argparse.Namespace) -> int:
    from imgdedup_pipeline.core.report_server import serve_reports

    server = serve_reports(args.host, args.port)
    print(
        f"serving the reports of imgdedup output folders on http://{args.host}:{args.port}/<absolute path of OUT>/report.html"
    )
    print(
        f"  (set IMGDEDUP_REPORT_BASE_URL=http://{args.host}:{args.port} for the Dagster UI's report links; scripts/ui.sh does)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgdedup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize the whole graph for a folder")
    for name in RUN_SETTINGS:
        add_setting_argument(run, name)
    run.add_argument(
        "--verbose", action="store_true", help="print the stack traces of failures (always kept in the Dagster run log)"
    )
    run.set_defaults(handler=command_run, settings_fields=RUN_SETTINGS)
    demo = commands.add_parser("demo", help="build the bundled sample set and run the pipeline on it")
    demo.add_argument(
        "--out",
        default=str(PROJECT_ROOT / "demo-output"),
        help="folder for the sample set (OUT/sample-images) and the results (OUT/results)",
    )
    add_setting_argument(demo, "embedder", default="offline", default_text="offline for the demo")
    add_setting_argument(
        demo,
        "max_duplicate_fraction",
        default=0.95,
        default_text="0.95 for the demo: the sample is mostly planted copies",
    )
    demo.add_argument(
        "--sample-only",
        action="store_true",
        help="only build the sample folder (OUT/sample-images), as scripts/ui.sh does",
    )
    demo.set_defaults(handler=command_demo)
    calibrate = commands.add_parser(
        "calibrate",
        help="choose the near-duplicate threshold for the model from edited copies of a sample (no labels) and store it",
    )
    for name in CALIBRATE_SETTINGS:
        add_setting_argument(calibrate, name)
    calibrate.add_argument(
        "--force", action="store_true", help="recalibrate even if this sample was calibrated with these settings"
    )
    calibrate.add_argument(
        "--verbose", action="store_true", help="print the stack traces of failures (always kept in the Dagster run log)"
    )
    calibrate.set_defaults(handler=command_calibrate, settings_fields=CALIBRATE_SETTINGS)
    similar = commands.add_parser(
        "similar",
        help="print the K images most similar to PATH, from the vector table: a `distance  path` header, then one line per image, "
        "nearest first; the distance is on the uniqueness scale (0 = same picture), so it compares with the thresholds",
    )
    similar.add_argument(
        "path", help="an image of the run in --out: relative to its image root, or an absolute path inside it"
    )
    similar.add_argument("--k", type=int, default=5, help="how many images to print (default 5)")
    similar.add_argument("--out", default=".", help="the --out folder of an earlier run (default: current folder)")
    similar.set_defaults(handler=command_similar)
    reports = commands.add_parser(
        "serve-reports", help="serve the HTML reports on a loopback port, so the Dagster UI's report links open"
    )
    reports.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    reports.add_argument("--port", type=int, default=3001)
    reports.set_defaults(handler=command_serve_reports)
    return parser


def main(argv: list[str] | None = None) -> int:
    # At exit the interpreter's last garbage collections walk every object Dagster, GX, LanceDB
    # and the models left, a visible share of a small rerun (bench/rerun.py), to free memory the
    # OS takes back anyway. Frozen objects are skipped; atexit handlers still run, and an in-process caller
    # (tests) keeps its collector until its own exit. unregister: one registration per process.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return args.handler(args)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        gc.set_threshold(*thresholds)  # an in-process caller (tests) gets its own back


if __name__ == "__main__":
    sys.exit(main())

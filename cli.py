"""`imgdedup`: run the dedup graph on a folder from the command line (same Definitions as the UI).

Exit codes: 0 success (every check passed), 1 a blocking check failed or a step failed,
2 invalid configuration (nothing was run).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
RUN_SOURCE_TAG = "imgdedup/launched_from"


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or the project-local `.dagster_home` (with the repo's dagster.yaml), so
    CLI runs land in the same instance the UI reads."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        config.symlink_to(PROJECT_ROOT / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="folder of images (walked recursively)")
    parser.add_argument("--out", required=True, help="folder for exports and state (vector table, caches)")
    parser.add_argument("--embedder", choices=["hf", "offline"], default=None, help="hf (default, transformers model) or offline (pip-shipped EfficientNet-Lite0)")
    parser.add_argument("--model", default=None, help="hub id or local model directory for --embedder hf")
    parser.add_argument("--lancedb-uri", default=None, help="vector store URI (default OUT/state/lancedb)")
    parser.add_argument("--duplicate-threshold", type=float, default=None)
    parser.add_argument("--near-duplicate-threshold", type=float, default=None)
    parser.add_argument("--keep-policy", default=None, help="resolution (default), first_seen or path")
    parser.add_argument("--near-duplicate-action", default=None, help="remove (default) or review")
    parser.add_argument("--max-duplicate-fraction", type=float, default=None)
    parser.add_argument("--hash-threshold-bits", type=int, default=None, help="pHash bits at the near-duplicate threshold (default 10; 0 = embedding only)")
    parser.add_argument("--batch-size", type=int, default=None)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        image_root=str(Path(args.images).resolve()),
        out_dir=str(Path(args.out).resolve()),
        embedder=args.embedder,
        model=args.model,
        lancedb_uri=args.lancedb_uri,
        duplicate_threshold=args.duplicate_threshold,
        near_duplicate_threshold=args.near_duplicate_threshold,
        keep_policy=args.keep_policy,
        near_duplicate_action=args.near_duplicate_action,
        max_duplicate_fraction=args.max_duplicate_fraction,
        hash_threshold_bits=args.hash_threshold_bits,
        batch_size=args.batch_size,
    )


def run_pipeline(settings: Settings, source: str = "cli", log_level: str = "INFO"):
    """Materialize the whole graph for `settings` in the persistent Dagster instance.

    Returns:
        The `ExecuteInProcessResult`.
    """
    import dagster as dg

    from definitions import DEDUP_JOB, build_definitions

    ensure_dagster_home()
    job = build_definitions(settings).resolve_job_def(DEDUP_JOB)
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance,
            tags={RUN_SOURCE_TAG: source},
            raise_on_error=False,
            # Progress and warnings on the terminal; the full debug log stays in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )


def summarize(result, settings: Settings) -> int:
    """Print what happened and where the results are; return the exit code.

    Every failed check is printed with its observed value, threshold and unexpected count, and
    every asset the run planned but did not materialize is listed as held back (a failed blocking
    check skips everything downstream of it, e.g. `training_manifest`).
    """
    import json

    import pandas as pd

    out = Path(settings.out_dir)
    evaluations = result.get_asset_check_evaluations()
    failed_checks = [evaluation for evaluation in evaluations if not evaluation.passed]
    for evaluation in failed_checks:
        print(f"FAILED check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}" + (" (blocking)" if evaluation.blocking else ""))
        for key in ("observed_value", "threshold", "unexpected_count", "failed_expectations"):
            value = evaluation.metadata[key].value if key in evaluation.metadata else None
            if value is not None:
                print(f"    {key}: {json.dumps(value, default=str)}")
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        # A failed blocking check fails its step too; it is reported above with its values.
        if error is not None and error.cls_name != "DagsterAssetCheckFailedError":
            print(f"FAILED step {event.step_key}: {error.message.strip()[:2000]}", file=sys.stderr)
    from definitions import build_definitions

    # The run targets its asset selection, or (none given) every asset of the dedup job.
    targeted = set(result.dagster_run.asset_selection or build_definitions(settings).resolve_all_asset_keys())
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    held_back = sorted(key.to_user_string() for key in targeted - materialized)

    uniqueness_csv = out / "uniqueness.csv"
    if uniqueness_csv.exists():
        table = pd.read_csv(uniqueness_csv)
        counts = table["label"].value_counts().to_dict()
        removed = int(table["removed"].sum()) if "removed" in table else 0
        print(f"scored {len(table)} images: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("duplicate", "near_duplicate", "unique")) + f"; {removed} removed")
    written_by = {"uniqueness.csv": "duplicate_groups", "duplicates.csv": "duplicates_collection", "clean.csv": "clean_dataset", "rejected.csv": "rejected_images", "training_manifest.csv": "training_manifest"}
    for name, asset in written_by.items():
        if (out / name).exists():
            # An asset held back in this run did not write its file: it is from an earlier run.
            stale = "  (not written by this run: from an earlier run)" if asset in held_back else ""
            print(f"  {name:21s} {out / name}{stale}")
    print(f"checks: {len(evaluations) - len(failed_checks)} passed, {len(failed_checks)} failed")
    print(f"dagster run {result.run_id} (DAGSTER_HOME={os.environ.get('DAGSTER_HOME')})")
    if held_back:
        print("held back (not materialized): " + ", ".join(held_back))
    return EXIT_OK if result.success and not failed_checks else EXIT_FAILED


def command_run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    problems = settings.problems()
    if problems:
        for problem in problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    result = run_pipeline(settings)
    return summarize(result, settings)


def command_demo(args: argparse.Namespace) -> int:
    from core.sample import build_sample_set

    out = Path(args.out).resolve()
    sample = build_sample_set(out / "sample-images")
    print(f"sample set: {len(sample['files'])} files in {sample['root']}")
    settings = Settings.from_env().with_overrides(image_root=sample["root"], out_dir=str(out / "results"), embedder=args.embedder)
    return summarize(run_pipeline(settings, source="cli-demo"), settings)


def similar_images(out_dir: Path, relative_path: str, k: int) -> list[dict]:
    """The k images nearest to `relative_path` in the vector table of the run in `out_dir`.

    Raises:
        ValueError: no earlier run in `out_dir`, or the path is not among its images.
    """
    import json

    import pandas as pd

    from resources.lancedb import LanceDBResource

    manifest_path = out_dir / "state" / "vectors.json"
    if not manifest_path.exists():
        raise ValueError(f"no vector table recorded in {out_dir}; run `imgdedup run --images DIR --out {out_dir}` first")
    manifest = json.loads(manifest_path.read_text())
    images = pd.read_parquet(out_dir / "state" / manifest["catalog"])
    paths_by_hash = images.groupby("pixel_hash")["path"].apply(sorted).to_dict()
    query = images.loc[images["path"] == relative_path.replace("\\", "/").removeprefix("./"), "pixel_hash"]
    if query.empty:
        raise ValueError(f"{relative_path!r} is not an image of the last run on {manifest['image_root']}")
    lancedb = LanceDBResource(uri=manifest["uri"])
    return lancedb.nearest_paths(manifest["model_id"], query.iloc[0], paths_by_hash, k, exclude_path=relative_path)


def command_similar(args: argparse.Namespace) -> int:
    try:
        rows = similar_images(Path(args.out).resolve(), args.path, args.k)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for row in rows:
        print(f"{row['uniqueness_distance']:.6f}  {row['path']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgdedup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize the whole graph for a folder")
    _add_settings_arguments(run)
    run.set_defaults(handler=command_run)
    demo = commands.add_parser("demo", help="build the bundled sample set and run the pipeline on it")
    demo.add_argument("--out", default=str(PROJECT_ROOT / "demo-output"))
    demo.add_argument("--embedder", choices=["hf", "offline"], default="offline")
    demo.set_defaults(handler=command_demo)
    similar = commands.add_parser("similar", help="print the K images most similar to PATH, from the vector table")
    similar.add_argument("path", help="image path relative to the image root of the run in --out")
    similar.add_argument("--k", type=int, default=5)
    similar.add_argument("--out", default=".", help="the --out folder of an earlier run (default: current folder)")
    similar.set_defaults(handler=command_similar)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

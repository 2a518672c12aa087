"""Helpers shared by the crash / resume and concurrency tests: `imgdedup` runs as separate
processes against a throwaway Dagster instance (their photo tiles: tests/synthetic_images.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lancedb
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Offline embedder, small batches (many checkpoints), and no duplicate gate: tiles of one photo
# may look alike, and whether they do is not what these tests are about.
RUN_FLAGS = ("--embedder", "offline", "--batch-size", "4", "--max-duplicate-fraction", "1.0")


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "imgdedup_pipeline.cli", *map(str, args)]


def cli_env(dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: its own DAGSTER_HOME (the CLI links the repo's dagster.yaml
    into an empty one) and no IMGDEDUP_* settings leaking in from the caller."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGDEDUP_")}
    return {
        **env,
        "DAGSTER_HOME": str(dagster_home),
        "GX_ANALYTICS_ENABLED": "false",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        **extra,
    }


def run_cli(*args, dagster_home: Path, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*args),
        cwd=PROJECT_ROOT,
        env=cli_env(dagster_home, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def vector_rows(uri: Path | str) -> pd.DataFrame:
    """Every row of the (single) vector table under `uri`: pixel_hash, model_id, vector."""
    db = lancedb.connect(str(uri))
    (name,) = db.table_names()
    return db.open_table(name).to_pandas()

"""Helpers shared by the crash / resume and concurrency tests: a folder of distinct real photos
(tiles of scikit-image's sample photos, so that the offline model's distances mean something) and
`imgdedup` runs as separate processes against a throwaway Dagster instance."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel", "retina")
TILE_GRID = 3  # 3 x 3 tiles per photo
TILE_SIDE = 64
# Offline embedder, small batches (many checkpoints), and no duplicate gate: tiles of one photo
# may look alike, and whether they do is not what these tests are about.
RUN_FLAGS = ("--embedder", "offline", "--batch-size", "4", "--max-duplicate-fraction", "1.0")


def write_photo_tiles(folder: Path, count: int) -> list[Path]:
    """`count` distinct RGB tiles (TILE_SIDE px PNGs) cut from scikit-image's bundled photos."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        photo = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"))
        height, width = photo.shape[0] // TILE_GRID, photo.shape[1] // TILE_GRID
        for row in range(TILE_GRID):
            for column in range(TILE_GRID):
                if len(written) == count:
                    return written
                tile = photo[row * height : (row + 1) * height, column * width : (column + 1) * width]
                path = folder / name / f"{row}{column}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(tile).resize((TILE_SIDE, TILE_SIDE), Image.Resampling.LANCZOS).save(path)
                written.append(path)
    if len(written) < count:
        raise ValueError(f"only {len(written)} tiles available, {count} requested")
    return written


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "cli", *map(str, args)]


def cli_env(dagster_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: its own DAGSTER_HOME (the CLI links the repo's dagster.yaml
    into an empty one) and no IMGDEDUP_* settings leaking in from the caller."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGDEDUP_")}
    return {**env, "DAGSTER_HOME": str(dagster_home), "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1", **extra}


def run_cli(*args, dagster_home: Path, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=PROJECT_ROOT, env=cli_env(dagster_home, **extra_env), capture_output=True, text=True, timeout=timeout)


def vector_rows(uri: Path | str) -> pd.DataFrame:
    """Every row of the (single) vector table under `uri`: pixel_hash, model_id, vector."""
    db = lancedb.connect(str(uri))
    (name,) = db.table_names()
    return db.open_table(name).to_pandas()

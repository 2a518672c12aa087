"""SPEC.md, "several signals", through the whole graph (offline backbone, LanceDB in tmp, real
PNGs): the perceptual hash only vouches for a match within its cutoff and never counts on flat
images, so those are decided by the embedding and pixel identity alone, and every score that the
hash does not vouch for is the embedding's nearest distance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import lancedb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.core.images import load_rgb, pixel_hash
from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_UNIQUE
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions

FLOAT32_TOLERANCE = 1e-6
SOLID_COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


def grey_gradient(width: int, height: int) -> Image.Image:
    """Black to white along the width."""
    return Image.fromarray(np.tile(np.linspace(0, 255, width).astype(np.uint8)[None, :], (height, 1))).convert("RGB")


def run_pipeline(images: dict[str, Image.Image], root: Path) -> pd.DataFrame:
    """Save `images` as PNGs, run the dedup job, and return uniqueness.csv indexed by path, with
    `embedding_uniqueness`: half the cosine distance to the nearest other content in the vector
    table (what the score is when no other signal vouches for a match)."""
    folder, out = root / "images", root / "out"
    folder.mkdir(parents=True)
    for name, image in images.items():
        image.save(folder / f"{name}.png")
    # Flat images of one colour at two sizes are near-duplicates by embedding: not the point here.
    settings = Settings(image_root=str(folder), out_dir=str(out), embedder="offline", max_duplicate_fraction=1.0)
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    assert result.success, [event.step_failure_data.error.message[:500] for event in result.get_step_failure_events()]
    scores = pd.read_csv(out / "uniqueness.csv", keep_default_na=False).set_index("path")
    db = lancedb.connect(settings.vector_store_uri)
    (table,) = db.table_names()
    stored = db.open_table(table).to_pandas().set_index("pixel_hash")["vector"]
    contents = [pixel_hash(load_rgb(folder / path)) for path in scores.index]
    vectors = np.stack([np.asarray(stored[h], np.float64) for h in contents])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    distance = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0)
    np.fill_diagonal(distance, np.inf)
    return scores.assign(embedding_uniqueness=distance.min(axis=1) / 2.0)


@pytest.fixture(scope="module")
def solid_colours(tmp_path_factory) -> pd.DataFrame:
    images = {name: Image.new("RGB", (256, 256), colour) for name, colour in SOLID_COLOURS.items()}
    return run_pipeline(images, tmp_path_factory.mktemp("solid-colours"))


def test_solid_colours_are_never_duplicates_of_each_other(solid_colours):
    """They all have the same (empty) pHash: it used to make them `1e-9 duplicate` of each other."""
    assert len(solid_colours) == len(SOLID_COLOURS)
    assert (solid_colours["label"] != LABEL_DUPLICATE).all(), solid_colours[["uniqueness", "label", "nearest_path"]]
    assert (solid_colours["uniqueness"] > 1e-4).all()
    assert solid_colours.loc["red.png", "label"] == LABEL_UNIQUE


def test_solid_colours_score_their_embedding_distance(solid_colours):
    np.testing.assert_allclose(
        solid_colours["uniqueness"], solid_colours["embedding_uniqueness"], atol=FLOAT32_TOLERANCE, rtol=0
    )


def test_a_red_dot_is_not_a_duplicate_of_a_long_grey_gradient(tmp_path):
    scores = run_pipeline(
        {"dot": Image.new("RGB", (1, 1), (255, 0, 0)), "gradient": grey_gradient(30000, 30)}, tmp_path
    )
    assert (scores["label"] == LABEL_UNIQUE).all(), scores[["uniqueness", "label"]]
    assert scores["group_id"].eq("").all()
    np.testing.assert_allclose(scores["uniqueness"], scores["embedding_uniqueness"], atol=FLOAT32_TOLERANCE, rtol=0)

"""The calibration asset and CLI on real components (offline backbone, LanceDB in tmp), and how
scoring picks the threshold in force: pinned, else calibrated for the model, else the default."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image
from synthetic_images import sample_photo

from imgdedup_pipeline.core.calibration import CALIBRATION_RULES_VERSION, write_calibration
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import (
    ALL_ASSETS,
    CALIBRATION_JOB,
    DEDUP_JOB,
    build_definitions,
    model_id_for,
    resources_for,
)
from imgdedup_pipeline.resources.policy import SOURCE_CALIBRATED, SOURCE_DEFAULT, SOURCE_PINNED, DedupPolicyResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera", "coins")


# --- which threshold is in force (no run needed) --------------------------------------------------


@pytest.mark.parametrize(
    "pinned, stored, model, expected, source",
    [
        (None, None, "m", 0.05, SOURCE_DEFAULT),
        (None, 0.0731, "m", 0.0731, SOURCE_CALIBRATED),
        (0.06, 0.0731, "m", 0.06, SOURCE_PINNED),
        (None, 0.0731, "another-model", 0.05, SOURCE_DEFAULT),
    ],
    ids=["nothing-stored", "calibrated", "pinned-wins", "other-models-calibration-ignored"],
)
def test_threshold_in_force(tmp_path, pinned, stored, model, expected, source):
    thresholds_file = tmp_path / "thresholds.json"
    if stored is not None:
        write_calibration(
            thresholds_file, "m", {"near_duplicate_threshold": stored, "sample_size": 50, "target_precision": 0.99}
        )
    policy = DedupPolicyResource(near_duplicate_threshold=pinned, thresholds_file=str(thresholds_file), model_id=model)
    in_force = policy.thresholds_in_force()
    assert (in_force.thresholds.near_duplicate, in_force.source) == (expected, source)
    assert policy.thresholds == in_force.thresholds  # what grouping and the checks read
    assert f"{expected:g}" in in_force.describe()


def test_a_calibrated_threshold_is_described_with_its_calibration(tmp_path):
    record = {
        "near_duplicate_threshold": 0.0731,
        "sample_size": 50,
        "target_precision": 0.99,
        "calibrated_at": "2026-12-05T15:00:00Z",
    }
    write_calibration(tmp_path / "t.json", "m", record)
    described = (
        DedupPolicyResource(thresholds_file=str(tmp_path / "t.json"), model_id="m").thresholds_in_force().describe()
    )
    assert described == "0.0731 (calibrated for m on 50 images at target precision 0.99, 2026-12-05T15:00:00Z)"


def test_a_calibrated_value_below_the_duplicate_threshold_is_refused(tmp_path):
    write_calibration(tmp_path / "t.json", "m", {"near_duplicate_threshold": 1e-5})
    policy = DedupPolicyResource(thresholds_file=str(tmp_path / "t.json"), model_id="m")
    with pytest.raises(ValueError, match="does not fit the duplicate threshold"):
        policy.thresholds_in_force()


def test_settings_leave_the_threshold_unpinned_unless_set():
    assert Settings().near_duplicate_threshold is None
    assert Settings.from_env({"IMGDEDUP_NEAR_DUPLICATE_THRESHOLD": "0.07"}).near_duplicate_threshold == 0.07
    policy = resources_for(Settings(out_dir="/tmp/x", embedder="offline"))["policy"]
    assert policy.near_duplicate_threshold is None and policy.thresholds_file == "/tmp/x/state/thresholds.json"
    # No model id fixed at load: the assets pass the id of the vectors they read.
    assert policy.model_id is None


# --- real runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration-images")
    for name in PHOTOS:
        sample_photo(name).save(folder / f"{name}.png")
    # The user's own duplicates: a re-compressed, resized chelsea and an exact copy of coffee.
    sample_photo("chelsea").resize((300, 200)).save(folder / "chelsea-small.jpg", quality=70)
    sample_photo("coffee").save(folder / "coffee-copy.png")
    return folder


@pytest.fixture(scope="module")
def calibrated(photo_folder, tmp_path_factory):
    settings = Settings(
        image_root=str(photo_folder),
        out_dir=str(tmp_path_factory.mktemp("calibration-out")),
        embedder="offline",
        max_duplicate_fraction=1.0,
    )
    with dg.instance_for_test() as instance:
        definitions = build_definitions(settings)
        calibration = definitions.resolve_job_def(CALIBRATION_JOB).execute_in_process(instance=instance)
        again = definitions.resolve_job_def(CALIBRATION_JOB).execute_in_process(instance=instance)
        scoring = definitions.resolve_job_def(DEDUP_JOB).execute_in_process(instance=instance, raise_on_error=False)
        pinned_settings = dataclasses.replace(settings, near_duplicate_threshold=0.05)
        pinned = dg.materialize(
            ALL_ASSETS, resources=resources_for(pinned_settings), instance=instance, raise_on_error=False
        )
    return settings, calibration, again, scoring, pinned


def metadata_of(result, asset: str) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return dict(events[-1].materialization.metadata)


def test_calibration_stores_a_threshold_per_model_and_plots_both_distributions(calibrated):
    settings, calibration, _, _, _ = calibrated
    assert calibration.success
    stored = json.loads(Path(settings.thresholds_file).read_text())["models"]
    record = stored[model_id_for(settings)]
    assert 0.02 <= record["near_duplicate_threshold"] <= 0.3
    assert record["precision"] >= 0.99 and record["sample_size"] == len(PHOTOS) + 1  # coffee-copy is the same content
    assert record["excluded_own_duplicates"] >= 1  # chelsea-small, which the pHash matches to chelsea
    metadata = metadata_of(calibration, "embedding_thresholds")
    assert metadata["near_duplicate_threshold"].value == pytest.approx(record["near_duplicate_threshold"], abs=1e-6)
    assert metadata["distributions"].value.startswith("![calibration distributions](data:image/png;base64,")
    with Image.open(metadata["distributions_png"].value) as png:
        assert png.format == "PNG" and png.width >= 600


def test_an_unchanged_sample_is_not_recalibrated(calibrated):
    _, calibration, again, _, _ = calibrated
    assert again.success and metadata_of(again, "embedding_thresholds")["reused"].value is True
    assert metadata_of(calibration, "embedding_thresholds")["reused"].value is False


def test_scoring_uses_the_calibrated_threshold_and_shows_it(calibrated):
    settings, _, _, scoring, _ = calibrated
    assert scoring.success
    # dedup_job never calibrates: the stored value is read.
    assert "embedding_thresholds" not in {
        e.asset_key.to_user_string() for e in scoring.get_asset_materialization_events()
    }
    stored = json.loads(Path(settings.thresholds_file).read_text())["models"][model_id_for(settings)][
        "near_duplicate_threshold"
    ]
    metadata = metadata_of(scoring, "uniqueness_scores")
    assert metadata["near_duplicate_threshold"].value == pytest.approx(stored)
    assert metadata["thresholds"].value["near_duplicate_source"] == SOURCE_CALIBRATED
    assert f"`near_duplicate` ≤ {stored:g}" in metadata["lowest_scores"].value
    assert "calibrated for" in metadata["lowest_scores"].value


def test_a_pinned_threshold_wins_over_the_calibrated_one(calibrated):
    _, _, _, _, pinned = calibrated
    metadata = metadata_of(pinned, "uniqueness_scores")
    assert metadata["near_duplicate_threshold"].value == 0.05
    assert metadata["thresholds"].value["near_duplicate_source"] == SOURCE_PINNED


def test_cli_calibrate_prints_and_stores_the_threshold(photo_folder, tmp_path):
    out, home = tmp_path / "out", tmp_path / "home"
    home.mkdir()
    command = [
        sys.executable,
        "-m",
        "imgdedup_pipeline.cli",
        "calibrate",
        "--images",
        str(photo_folder),
        "--out",
        str(out),
        "--embedder",
        "offline",
        "--sample",
        "6",
    ]
    completed = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((out / "state" / "thresholds.json").read_text())["models"][
        model_id_for(Settings(embedder="offline"))
    ]
    assert (
        f"near-duplicate threshold for {model_id_for(Settings(embedder='offline'))}: {record['near_duplicate_threshold']:g}"
        in completed.stdout
    )
    assert record["sample_size"] == 6
    bad = subprocess.run(
        [*command[:-2], "--target-precision", "1.5"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "target_precision must be within (0, 1]" in bad.stderr


def test_a_calibration_stored_under_older_rules_is_made_again(calibrated):
    """The same sample and settings reuse a stored calibration only if it measured what this
    version measures (its edits, its negatives, the pHash rule)."""
    settings, *_ = calibrated
    path = Path(settings.thresholds_file)
    stored = json.loads(path.read_text())
    for record in stored["models"].values():
        record["rules_version"] = CALIBRATION_RULES_VERSION - 1
    path.write_text(json.dumps(stored))
    with dg.instance_for_test() as instance:
        result = build_definitions(settings).resolve_job_def(CALIBRATION_JOB).execute_in_process(instance=instance)
    assert result.success and metadata_of(result, "embedding_thresholds")["reused"].value is False
    assert json.loads(path.read_text())["models"][model_id_for(settings)]["rules_version"] == CALIBRATION_RULES_VERSION

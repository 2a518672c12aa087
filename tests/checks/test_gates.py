"""The blocking GX gates in real runs: planted data fails each check with the observed value that
explains it, and `training_manifest` is held back; clean data passes and the manifest is written.

Every run is the real dedup job (Dagster, GX, LanceDB in tmp, the offline backbone, real PNGs).
All scenarios share one vector table, so only the first run pays for embeddings. Checks that real
input cannot break (the score table's invariants, the accounting) are run on a copy of a passing
run's stored tables, tampered on disk, with the real downstream assets selected after them.
"""

import dataclasses
import pickle
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic_images import sample_photo

from imgdedup_pipeline import cli
from imgdedup_pipeline.assets.training_manifest import SPLIT_VALIDATION, split_position
from imgdedup_pipeline.checks import all_checks
from imgdedup_pipeline.core.embedders import OFFLINE_MODEL_ID
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import ALL_ASSETS, DEDUP_JOB, build_definitions, resources_for
from imgdedup_pipeline.resources.lancedb import LanceDBResource

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "camera", "coins")
ALL_CHECK_NAMES = {
    "uniqueness_scores_one_row_per_image",
    "uniqueness_scores_no_nulls",
    "uniqueness_scores_in_range",
    "uniqueness_scores_identical_group_zeros",
    "clean_dataset_duplicate_fraction",
    "clean_dataset_unique_pixel_hash",
    "clean_dataset_no_duplicate_pairs",
    "clean_dataset_accounting",
}
# The planted folder: 6 photos, a byte copy of one (identical) and one with a single pixel
# brightened (cosine distance ~4e-5: a `duplicate` by label, yet a different pixel hash), plus an
# undecodable file. 3 of the 8 decodable images are labelled duplicate: the copy and both rocket
# images (near-duplicates of each other both get the same small score); 2 are removed (the keeper
# of each group stays), so the raw-data gate observes 2/8.
COPY, ORIGINAL = "copies/coffee_copy.png", "photos/coffee.png"
EDITED, EDIT_SOURCE = "edits/rocket_one_pixel.png", "photos/rocket.png"
DECODABLE, DISCOVERED, REMOVED = 8, 9, 2


@pytest.fixture(scope="module")
def planted_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    (root / "photos").mkdir()
    for name in PHOTOS:
        sample_photo(name).resize((96, 64)).save(root / "photos" / f"{name}.png")
    (root / "copies").mkdir()
    shutil.copy(root / ORIGINAL, root / COPY)
    (root / "edits").mkdir()
    pixels = np.asarray(Image.open(root / EDIT_SOURCE)).copy()
    pixels[0, 0] = np.minimum(pixels[0, 0].astype(int) + 20, 255)
    Image.fromarray(pixels).save(root / EDITED)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def vector_store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("lancedb"))


def image_root_with_pins(planted_images: Path, target: Path, pins: dict[str, str] | None = None) -> Path:
    """A copy of the planted folder, with a review file pinning `pins` (path -> keep/remove)."""
    shutil.copytree(planted_images, target)
    if pins:
        (target / ".imgdedup").mkdir()
        pd.DataFrame({"path": list(pins), "decision": list(pins.values())}).to_csv(
            target / ".imgdedup" / "review.csv", index=False
        )
    return target


def run_dedup_job(settings: Settings):
    return (
        build_definitions(settings)
        .resolve_job_def(DEDUP_JOB)
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )


def evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def values(evaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def assert_only_failed(result, failed: set[str]) -> None:
    """`failed` failed, every other check that ran passed, and training was held back."""
    outcomes = {name: e.passed for name, e in evaluations(result).items()}
    assert {name for name, passed in outcomes.items() if not passed} == failed
    assert not result.success
    assert "training_manifest" not in materialized(result)


@pytest.fixture(scope="module")
def passing_run(planted_images, vector_store, tmp_path_factory):
    base = tmp_path_factory.mktemp("passing")
    settings = Settings(
        image_root=str(image_root_with_pins(planted_images, base / "images")),
        out_dir=str(base / "out"),
        embedder="offline",
        lancedb_uri=vector_store,
    )
    return settings, run_dedup_job(settings)


def test_clean_data_passes_every_gate_and_writes_the_training_manifest(passing_run, capsys):
    settings, result = passing_run
    assert result.success
    assert {name: e.passed for name, e in evaluations(result).items()} == dict.fromkeys(ALL_CHECK_NAMES, True)
    assert values(evaluations(result)["clean_dataset_duplicate_fraction"])["observed_value"] == REMOVED / DECODABLE
    assert "training_manifest" in materialized(result)

    manifest = pd.read_csv(Path(settings.out_dir) / "training_manifest.csv")
    clean = pd.read_csv(Path(settings.out_dir) / "clean.csv")
    assert sorted(manifest["path"]) == sorted(clean["path"]) and len(manifest) == DECODABLE - 2
    # The split is a function of the image id alone.
    expected = [SPLIT_VALIDATION if split_position(i) < 0.1 else "train" for i in manifest["image_id"]]
    assert manifest["split"].tolist() == expected

    assert cli.summarize(result, settings) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert f"checks: {len(ALL_CHECK_NAMES)} passed, 0 failed" in printed
    assert "held back" not in printed and "FAILED" not in printed


def test_cli_duplicate_fraction_gate_holds_back_training_only_and_says_how_to_change_it(
    planted_images, vector_store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    images = image_root_with_pins(planted_images, tmp_path / "images")
    out = tmp_path / "out"
    args = [
        "run",
        "--images",
        str(images),
        "--out",
        str(out),
        "--embedder",
        "offline",
        "--lancedb-uri",
        vector_store,
        "--max-duplicate-fraction",
        "0.2",
    ]

    assert cli.main(args) == cli.EXIT_FAILED

    printed = capsys.readouterr().out
    assert "FAILED check clean_dataset:clean_dataset_duplicate_fraction (blocking)" in printed
    assert f"observed_value: {REMOVED / DECODABLE}" in printed
    assert '"max_value": 0.2' in printed
    assert "held back (not materialized): training_manifest" in printed
    # The last lines say it in words: the gate, observed against limit, what was held back, the setting.
    last_lines = "\n".join(printed.strip().splitlines()[-5:])
    assert (
        f"clean_dataset_duplicate_fraction: removed {REMOVED} of {DECODABLE} decodable images: fraction 0.250, above the limit 0.2"
        in last_lines
    )
    assert "held back: training_manifest" in last_lines
    assert "--max-duplicate-fraction" in last_lines and "IMGDEDUP_MAX_DUPLICATE_FRACTION" in last_lines
    assert "resources.policy.config.max_duplicate_fraction" in last_lines
    # The dedup results are produced whatever the fraction; only training is held back.
    for name in ("uniqueness.csv", "duplicates.csv", "clean.csv", "clean.parquet", "rejected.csv"):
        assert (out / name).is_file(), name
    assert not (out / "training_manifest.csv").exists()
    assert len(pd.read_csv(out / "clean.csv")) == DECODABLE - REMOVED
    with dg.DagsterInstance.get() as instance:
        (record,) = instance.get_runs()
        assert record.is_failure
        # The run's own failure (what the UI shows on the run page) explains the gate too.
        failures = instance.get_records_for_run(record.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        messages = [r.event_log_entry.dagster_event.step_failure_data.error.message for r in failures]
    assert any(
        "clean_dataset_duplicate_fraction" in m and "--max-duplicate-fraction" in m and "training_manifest" in m
        for m in messages
    )


def test_cli_duplicate_fraction_at_the_limit_passes(planted_images, vector_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    images = image_root_with_pins(planted_images, tmp_path / "images")
    args = [
        "run",
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
        "--embedder",
        "offline",
        "--lancedb-uri",
        vector_store,
    ]

    assert cli.main([*args, "--max-duplicate-fraction", str(REMOVED / DECODABLE)]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("OK: every check passed")
    assert (tmp_path / "out" / "training_manifest.csv").is_file()


def test_pinned_identical_copies_fail_the_unique_pixel_hash_gate(planted_images, vector_store, tmp_path):
    images = image_root_with_pins(planted_images, tmp_path / "images", {ORIGINAL: "keep", COPY: "keep"})
    result = run_dedup_job(
        Settings(image_root=str(images), out_dir=str(tmp_path / "out"), embedder="offline", lancedb_uri=vector_store)
    )

    assert_only_failed(result, {"clean_dataset_unique_pixel_hash"})
    found = values(evaluations(result)["clean_dataset_unique_pixel_hash"])
    assert found["observed_value"] == 2 and found["unexpected_count"] == 2
    assert ORIGINAL in found["unexpected_sample"] and COPY in found["unexpected_sample"]
    assert "clean_dataset" in materialized(result)


def test_pinned_near_identical_pair_fails_the_no_duplicate_pairs_gate(planted_images, vector_store, tmp_path):
    images = image_root_with_pins(planted_images, tmp_path / "images", {EDIT_SOURCE: "keep", EDITED: "keep"})
    out = tmp_path / "out"
    # Embedding distance only, so that the observed value can be recomputed from the vectors alone
    # (the fused pHash distance is covered in test_check_logic).
    settings = Settings(
        image_root=str(images), out_dir=str(out), embedder="offline", lancedb_uri=vector_store, hash_threshold_bits=0
    )
    result = run_dedup_job(settings)

    assert_only_failed(result, {"clean_dataset_no_duplicate_pairs"})
    found = values(evaluations(result)["clean_dataset_no_duplicate_pairs"])
    # The observed distance is the pair's, read back from the vector table independently here.
    clean = pd.read_csv(out / "clean.csv").set_index("path")
    hashes = clean.loc[[EDIT_SOURCE, EDITED], "pixel_hash"].tolist()
    vectors = LanceDBResource(uri=vector_store).read_vectors(OFFLINE_MODEL_ID, set(hashes))
    pair_distance = (1.0 - float(np.dot(vectors[hashes[0]], vectors[hashes[1]]))) / 2.0
    observed = found["observed_value"]
    assert observed["expect_column_min_to_be_between(nearest_uniqueness_distance)"] == pytest.approx(
        pair_distance, abs=2e-7
    )  # float32 `1 - cos` near 1: ~1e-7 absolute resolution
    assert 0.0 < pair_distance <= found["duplicate_threshold"]
    assert observed["expect_column_values_to_be_between(nearest_uniqueness_distance)"] == 2  # each sees the other
    assert EDIT_SOURCE in found["unexpected_sample"] and EDITED in found["unexpected_sample"]


def copy_of_run(settings: Settings, target: Path) -> Settings:
    """A copy of a finished run's output folder (stored tables included) to tamper with."""
    shutil.copytree(settings.out_dir, target)
    return dataclasses.replace(settings, out_dir=str(target))


def tamper_stored_table(settings: Settings, asset: str, change) -> pd.DataFrame:
    """Replace the stored table of `asset` by `change(table)`; returns the original table."""
    stored = Path(settings.out_dir) / "state" / "assets" / asset
    with open(stored, "rb") as f:
        table = pickle.load(f)
    with open(stored, "wb") as f:
        pickle.dump(change(table), f)
    return table


def rerun_after(settings: Settings, selection: dg.AssetSelection):
    """Run `selection` (+ its checks), loading everything upstream of it from the stored tables."""
    return dg.materialize(
        [*ALL_ASSETS, *all_checks()],
        selection=selection,
        resources=resources_for(settings),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def duplicate_a_copy_row(scores: pd.DataFrame) -> pd.DataFrame:
    # The extra row is another zero in its group, with the group size raised to match, so only
    # the one-row-per-image rule is broken.
    copy_row = scores[scores["path"] == COPY]
    tampered = pd.concat([scores, copy_row], ignore_index=True)
    tampered.loc[tampered["identical_group"] == copy_row["identical_group"].iloc[0], "identical_group_size"] += 1
    return tampered


def null_one_label(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.assign(label=scores["label"].where(scores["path"] != "photos/camera.png", None))


def score_above_one(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.assign(uniqueness=scores["uniqueness"].where(scores["path"] != "photos/camera.png", 1.5))


def zero_the_keeper(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.assign(uniqueness=scores["uniqueness"].where(scores["path"] != ORIGINAL, 0.0))


@pytest.mark.parametrize(
    ("tamper", "failing_check", "observed_value", "in_sample"),  # in_sample(original scores) -> text
    [
        (duplicate_a_copy_row, "uniqueness_scores_one_row_per_image", 2, lambda scores: COPY),
        (
            null_one_label,
            "uniqueness_scores_no_nulls",
            {
                f"expect_column_values_to_not_be_null({c})": int(c == "label")
                for c in ("image_id", "path", "identical_group", "uniqueness", "label")
            },
            lambda scores: "photos/camera.png",
        ),
        (score_above_one, "uniqueness_scores_in_range", 1, lambda scores: "1.5"),
        (
            zero_the_keeper,
            "uniqueness_scores_identical_group_zeros",
            {
                "expect_column_values_to_be_in_set(zeros_minus_expected)": 1,
                "expect_column_pair_values_to_be_equal(identical_group_size, rows)": 0,
            },
            lambda scores: scores.loc[scores["path"] == ORIGINAL, "identical_group"].iloc[0],
        ),
    ],
    ids=["duplicate-row", "null-label", "score-above-one", "keeper-scored-zero"],
)
def test_a_broken_score_table_fails_its_gate_and_blocks_everything_downstream(
    passing_run, tmp_path, tamper, failing_check, observed_value, in_sample
):
    settings = copy_of_run(passing_run[0], tmp_path / "out")
    original = tamper_stored_table(settings, "uniqueness_scores", tamper)
    downstream = dg.AssetSelection.assets("uniqueness_scores").downstream(include_self=False)
    result = rerun_after(settings, dg.AssetSelection.checks_for_assets("uniqueness_scores") | downstream)

    assert_only_failed(result, {failing_check})
    assert materialized(result) == set()
    found = values(evaluations(result)[failing_check])
    assert found["observed_value"] == observed_value
    assert in_sample(original) in found["unexpected_sample"]


def test_an_image_missing_from_every_collection_fails_the_accounting_gate(passing_run, tmp_path):
    settings = copy_of_run(passing_run[0], tmp_path / "out")
    tamper_stored_table(settings, "duplicates_collection", lambda duplicates: duplicates[duplicates["path"] != COPY])
    result = rerun_after(settings, dg.AssetSelection.assets("clean_dataset", "training_manifest"))

    assert_only_failed(result, {"clean_dataset_accounting"})
    found = values(evaluations(result)["clean_dataset_accounting"])
    assert found["observed_value"] == {
        "expect_column_sum_to_be_between(times_placed)": DISCOVERED - 1,
        "expect_column_pair_values_to_be_equal(times_placed, discovered)": 1,
    }
    assert found["threshold"]["expect_column_sum_to_be_between(times_placed)"] == {
        "min_value": DISCOVERED,
        "max_value": DISCOVERED,
    }
    assert found["accounting"] == {
        "discovered": DISCOVERED,
        "clean": DECODABLE - 2,
        "duplicates": 1,
        "rejected": 1,
        "placed": DISCOVERED - 1,
    }
    assert COPY in found["unexpected_sample"]

"""The checks' plain logic on planted tables: the derived tables, the GX translation, the checks
called directly (with a real LanceDB in tmp), and the training split they gate."""

import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.assets.training_manifest import SPLIT_TRAIN, SPLIT_VALIDATION, assign_splits
from imgdedup_pipeline.checks.clean_dataset import clean_dataset_duplicate_fraction, clean_dataset_no_duplicate_pairs
from imgdedup_pipeline.checks.gx import check_result_from_outcomes, gx_expectations, validate_table
from imgdedup_pipeline.checks.invariants import (
    collection_placements,
    identical_group_zero_counts,
    nearest_kept_contents,
    removal_flags,
)
from imgdedup_pipeline.checks.uniqueness_scores import uniqueness_scores_identical_group_zeros
from imgdedup_pipeline.resources.lancedb import LanceDBResource
from imgdedup_pipeline.resources.policy import DedupPolicyResource


def scores_table(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """(path, identical_group, uniqueness) rows -> a uniqueness_scores-shaped table."""
    table = pd.DataFrame(rows, columns=["path", "identical_group", "uniqueness"])
    table["identical_group_size"] = table.groupby("identical_group")["path"].transform("size")
    return table.assign(image_id=table["path"], label="unique")


@pytest.mark.parametrize(
    ("rows", "zeros_minus_expected"),
    [
        ([("a", "g1", 0.3), ("a2", "g1", 0.0), ("a3", "g1", 0.0), ("b", "g2", 0.4)], {"g1": 0, "g2": 0}),
        ([("a", "g1", 0.0), ("a2", "g1", 0.0), ("b", "g2", 0.4)], {"g1": 1, "g2": 0}),
        ([("a", "g1", 0.3), ("a2", "g1", 0.2), ("b", "g2", 0.4)], {"g1": -1, "g2": 0}),
        ([("a", "g1", 0.3), ("a2", "g1", 0.0), ("b", "g2", 0.0)], {"g1": 0, "g2": 1}),
    ],
    ids=["n-1-zeros", "keeper-zeroed", "copy-not-zero", "singleton-zero"],
)
def test_identical_group_zero_counts(rows, zeros_minus_expected):
    table = identical_group_zero_counts(scores_table(rows))
    assert dict(zip(table["identical_group"], table["zeros_minus_expected"])) == zeros_minus_expected
    assert (table["rows"] == table["identical_group_size"]).all()


def test_zeros_check_fails_on_a_planted_table_and_names_the_group():
    result = uniqueness_scores_identical_group_zeros(
        uniqueness_scores=scores_table([("a", "g1", 0.0), ("a2", "g1", 0.0), ("b", "g2", 0.4)])
    )
    assert not result.passed
    assert result.metadata["observed_value"].value["expect_column_values_to_be_in_set(zeros_minus_expected)"] == 1
    assert "g1" in result.metadata["unexpected_sample"].value and "g2" not in result.metadata["unexpected_sample"].value


def test_zeros_check_catches_a_stated_group_size_that_disagrees_with_the_rows():
    table = scores_table([("a", "g1", 0.3), ("a2", "g1", 0.0)]).assign(identical_group_size=3)
    result = uniqueness_scores_identical_group_zeros(uniqueness_scores=table)
    assert not result.passed
    assert result.metadata["failed_expectations"].value == [
        "expect_column_pair_values_to_be_equal(identical_group_size, rows)"
    ]


def test_removal_flags_count_removed_images_not_keepers():
    raw = pd.DataFrame({"path": list("abcd")})
    # a and b are near-duplicates (a kept, b removed); c and d are unique: 1 of 4 removed, not 2.
    flags = removal_flags(raw, pd.DataFrame({"path": ["b"]}))
    assert flags.set_index("path")["removed"].to_dict() == {"a": 0, "b": 1, "c": 0, "d": 0}
    assert flags["removed"].mean() == 0.25


def test_two_near_duplicates_give_a_fraction_of_one_half():
    result = clean_dataset_duplicate_fraction(
        pd.DataFrame({"path": ["a", "b"]}),
        pd.DataFrame({"path": ["b"]}),
        DedupPolicyResource(max_duplicate_fraction=0.5),
    )
    assert result.passed and result.metadata["observed_value"].value == 0.5


@pytest.mark.parametrize(
    ("max_fraction", "passed"), [(0.5, True), (0.49, False)], ids=["at-threshold", "above-threshold"]
)
def test_duplicate_fraction_check_compares_with_the_policy(max_fraction, passed):
    raw = pd.DataFrame({"path": list("abcd")})
    result = clean_dataset_duplicate_fraction(
        raw, pd.DataFrame({"path": ["a", "c"]}), DedupPolicyResource(max_duplicate_fraction=max_fraction)
    )
    assert result.passed is passed
    assert result.metadata["observed_value"].value == 0.5
    assert result.metadata["threshold"].value == {"min_value": 0.0, "max_value": max_fraction}
    assert result.metadata["removed_images"].value == 2 and result.metadata["decodable_images"].value == 4
    assert ("above the limit" in result.description) is not passed


def test_duplicate_fraction_check_passes_when_nothing_was_decodable():
    result = clean_dataset_duplicate_fraction(
        pd.DataFrame({"path": []}), pd.DataFrame({"path": []}), DedupPolicyResource()
    )
    assert result.passed and result.metadata["observed_value"].value is None


def test_nearest_kept_contents_compares_distinct_contents_only():
    clean = pd.DataFrame({"path": ["a.png", "a_copy.png", "b.png", "c.png"], "pixel_hash": ["h1", "h1", "h2", "h3"]})
    vectors = {"h1": np.array([1.0, 0.0]), "h2": np.array([1.0, 0.02]), "h3": np.array([0.0, 1.0])}
    table = nearest_kept_contents(clean, vectors).set_index("path")
    assert list(table.index) == ["a.png", "b.png", "c.png"]
    assert table.loc["a.png", "nearest_path"] == "b.png" and table.loc["b.png", "nearest_path"] == "a.png"
    expected = (1.0 - 1.0 / np.sqrt(1.0 + 0.02**2)) / 2.0
    assert table.loc["a.png", "nearest_uniqueness_distance"] == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="no vector"):
        nearest_kept_contents(clean, {"h1": vectors["h1"]})


@pytest.fixture
def vector_table(tmp_path) -> LanceDBResource:
    lancedb = LanceDBResource(uri=str(tmp_path / "lancedb"))
    lancedb.insert_missing("model", ["h1", "h2", "h3"], np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0]], np.float32))
    return lancedb


def far_apart_phashes(count: int) -> list[list[int]]:
    """Random 64-bit pHash variants per content: ~32 bits apart, far beyond the hash threshold."""
    rng = np.random.default_rng(0)
    return [
        rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 8, dtype=np.int64).tolist() for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("hashes", "passed"),
    [(["h1", "h3"], True), (["h1", "h2", "h3"], False), (["h1"], True)],
    ids=["apart", "close-pair", "single-content"],
)
def test_no_duplicate_pairs_check_reads_the_vector_table(vector_table, hashes, passed):
    clean = pd.DataFrame(
        {
            "path": [f"{h}.png" for h in hashes],
            "pixel_hash": hashes,
            "phashes": far_apart_phashes(len(hashes)),
            "edge_hash": [[0] * 4] * len(hashes),
        }
    )
    result = clean_dataset_no_duplicate_pairs(
        clean_dataset=clean, image_vectors={"model_id": "model"}, lancedb=vector_table, policy=DedupPolicyResource()
    )
    assert result.passed is passed
    if not passed:
        closest = result.metadata["observed_value"].value[
            "expect_column_min_to_be_between(nearest_uniqueness_distance)"
        ]
        assert closest == pytest.approx((1.0 - 1.0 / np.sqrt(1.0001)) / 2.0, rel=1e-2)
        assert "h1.png" in result.metadata["unexpected_sample"].value


def test_no_duplicate_pairs_check_uses_the_fused_phash_distance(vector_table):
    """h1 and h3 are far apart as vectors, but their pHashes match: a duplicate by that signal."""
    same = far_apart_phashes(1)[0]
    clean = pd.DataFrame(
        {"path": ["h1.png", "h3.png"], "pixel_hash": ["h1", "h3"], "phashes": [same, same], "edge_hash": [[0] * 4] * 2}
    )
    result = clean_dataset_no_duplicate_pairs(
        clean_dataset=clean, image_vectors={"model_id": "model"}, lancedb=vector_table, policy=DedupPolicyResource()
    )
    assert result.passed is False
    without_hash = clean_dataset_no_duplicate_pairs(
        clean_dataset=clean,
        image_vectors={"model_id": "model"},
        lancedb=vector_table,
        policy=DedupPolicyResource(hash_threshold_bits=0),
    )
    assert without_hash.passed is True


def test_no_duplicate_pairs_check_ignores_the_phashes_of_flat_images(vector_table):
    """Two flat images hash alike (all zeros) whatever their colour: the hash says nothing there."""
    flat = [0] * 8
    clean = pd.DataFrame(
        {"path": ["h1.png", "h3.png"], "pixel_hash": ["h1", "h3"], "phashes": [flat, flat], "edge_hash": [[0] * 4] * 2}
    )
    result = clean_dataset_no_duplicate_pairs(
        clean_dataset=clean, image_vectors={"model_id": "model"}, lancedb=vector_table, policy=DedupPolicyResource()
    )
    assert result.passed is True


def test_no_duplicate_pairs_check_reuses_its_search_only_for_unchanged_inputs(vector_table, tmp_path):
    """With a state folder the nearest-content table of an earlier call is reused while the vectors,
    pHashes, paths and thresholds are the same; any change searches again, and the expectations
    run every time."""
    clean = pd.DataFrame(
        {
            "path": ["h1.png", "h3.png"],
            "pixel_hash": ["h1", "h3"],
            "phashes": far_apart_phashes(2),
            "edge_hash": [[0] * 4] * 2,
        }
    )
    state = tmp_path / "state"

    def check(table, lancedb=vector_table, policy=DedupPolicyResource()):
        return clean_dataset_no_duplicate_pairs(
            clean_dataset=table, image_vectors={"model_id": "model"}, lancedb=lancedb, policy=policy, state_dir=state
        )

    def essentials(result):
        return result.passed, result.metadata["observed_value"].value, result.metadata["failed_expectations"].value

    fresh = check(clean)
    again = check(clean)
    assert fresh.metadata["nearest_search"].value == "searched"
    assert again.metadata["nearest_search"].value.startswith("reused")
    assert (
        essentials(again)
        == essentials(fresh)
        == essentials(
            clean_dataset_no_duplicate_pairs(
                clean_dataset=clean,
                image_vectors={"model_id": "model"},
                lancedb=vector_table,
                policy=DedupPolicyResource(),
            )
        )
    )
    # h3's vector moves next to h1's in the table: searched again, and the check now fails.
    moved = LanceDBResource(uri=str(tmp_path / "moved"))
    moved.insert_missing("model", ["h1", "h3"], np.array([[1, 0, 0], [1, 0.01, 0]], np.float32))
    changed = check(clean, lancedb=moved)
    assert changed.metadata["nearest_search"].value == "searched" and changed.passed is False
    # The same for a changed path, pHash or threshold.
    for table, policy in (
        (clean.assign(path=["h1.png", "renamed.png"]), DedupPolicyResource()),
        (clean.assign(phashes=[clean["phashes"][0]] * 2), DedupPolicyResource()),
        (clean, DedupPolicyResource(near_duplicate_threshold=0.2)),
    ):
        assert check(table, policy=policy).metadata["nearest_search"].value == "searched"
    assert len(list((state / "check-tables").iterdir())) == 1


def test_collection_placements_find_images_placed_twice_never_or_from_nowhere():
    def table(*ids):
        return pd.DataFrame({"image_id": list(ids), "path": [f"{i}.png" for i in ids]})

    placements = collection_placements(
        raw_images=table("a", "b", "c"),
        rejected_images=table("r"),
        duplicates=table("b"),
        clean=table("a", "b", "stray"),
    ).set_index("image_id")
    assert placements["times_placed"].to_dict() == {"a": 1, "b": 2, "c": 0, "r": 1, "stray": 1}
    assert placements["discovered"].to_dict() == {"a": 1, "b": 1, "c": 1, "r": 1, "stray": 0}


def test_validate_table_reports_observed_values_thresholds_and_sample_rows():
    gxe = gx_expectations()
    table = pd.DataFrame({"path": ["a", "b", "c"], "score": [0.5, 1.5, -1.0]})
    (outcome,) = validate_table(
        table,
        [gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0)],
        suite_name="planted",
        id_columns=["path"],
        sample_size=1,
    )
    assert (outcome.success, outcome.observed_value, outcome.unexpected_count, outcome.element_count) == (
        False,
        2,
        2,
        3,
    )
    assert outcome.threshold == {"min_value": 0.0, "max_value": 1.0}
    assert len(outcome.unexpected_sample) == 1 and outcome.unexpected_sample[0]["path"] in ("b", "c")

    result = check_result_from_outcomes([outcome])
    assert not result.passed
    assert result.metadata["observed_value"].value == 2 and result.metadata["unexpected_count"].value == 2


def test_an_expectation_that_cannot_run_raises_instead_of_failing_the_check():
    gxe = gx_expectations()
    with pytest.raises(RuntimeError, match="no_such_column"):
        validate_table(
            pd.DataFrame({"a": [1]}), [gxe.ExpectColumnValuesToNotBeNull(column="no_such_column")], suite_name="broken"
        )


def test_training_split_is_deterministic_and_follows_the_fraction():
    clean = pd.DataFrame({"path": [f"{i:04d}.png" for i in range(2000)]}).assign(
        image_id=lambda t: t["path"], pixel_hash="h", width=1, height=1
    )
    split = assign_splits(clean, 0.1)
    assert split.equals(assign_splits(clean.sample(frac=1.0, random_state=0), 0.1))
    assert 0.07 < (split["split"] == SPLIT_VALIDATION).mean() < 0.13
    # Adding images never moves an existing one to the other split.
    fewer = assign_splits(clean.iloc[:1000], 0.1)
    assert split.set_index("path").loc[fewer["path"], "split"].tolist() == fewer["split"].tolist()
    assert set(assign_splits(clean, 0.0)["split"]) == {SPLIT_TRAIN}
    with pytest.raises(ValueError, match="validation_fraction"):
        assign_splits(clean, 1.5)

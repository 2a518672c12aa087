"""Tests for core.grouping, core.collections and core.overrides: keep policy, leader-assignment
groups, the Duplicates / clean collections, the interchange table and the human review file.

Vectors are 2-D unit vectors at chosen angles, so every cosine distance is known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.core.collections import (
    INTERCHANGE_COLUMNS,
    accounting,
    clean_table,
    duplicates_table,
    interchange_table,
)
from imgdedup_pipeline.core.grouping import assign_groups, keep_policy_order
from imgdedup_pipeline.core.images import image_id_for
from imgdedup_pipeline.core.overrides import find_review_file, read_review_file
from imgdedup_pipeline.core.scoring import LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE, Thresholds, compute_uniqueness_scores
from imgdedup_pipeline.core.search.contents import find_content_neighbors


def angle_for_distance(distance: float) -> float:
    return math.acos(1.0 - distance)


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def image(
    path: str,
    pixel_hash: str | None = None,
    content_pixels: int = 100,
    size_bytes: int = 1000,
    first_seen: str = "2024-01-01",
    border_pixels: int = 0,
) -> dict:
    """One catalog row: a (content_pixels + border_pixels) x 1 image whose content is content_pixels."""
    return {
        "image_id": image_id_for(path),
        "path": path,
        "pixel_hash": pixel_hash or path,
        "width": content_pixels + border_pixels,
        "height": 1,
        "content_pixels": content_pixels,
        "bytes": size_bytes,
        "first_seen": pd.Timestamp(first_seen, tz="UTC"),
    }


def ranking(rows: list[dict], policy: str = "resolution", overrides: dict | None = None) -> list[str]:
    """Paths in keep-policy order (kept first)."""
    images = pd.DataFrame(rows)
    rank = keep_policy_order(images, policy, overrides)
    path_of = dict(zip(images["image_id"], images["path"]))
    return [path_of[image_id] for image_id in rank.sort_values().index]


def run_groups(rows, vectors, action="remove", overrides=None, thresholds=Thresholds(), policy="resolution"):
    """Score and group like the pipeline does; returns (images, scores, groups), groups indexed by path."""
    images = pd.DataFrame(rows)
    neighbors = find_content_neighbors(vectors, radius=thresholds.near_duplicate_cosine_distance)
    rank = keep_policy_order(images, policy, overrides)
    scores = compute_uniqueness_scores(images, neighbors, rank, thresholds)
    groups = assign_groups(scores, neighbors.pairs_by_hash(), rank, thresholds, action, overrides)
    return images, scores, groups


def by_path(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("path")


def missing(value) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


# --- Keep policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, expected",
    [
        (
            [
                image("b_small.png", content_pixels=100, size_bytes=9000, first_seen="2020-01-01"),
                image("z_big.png", content_pixels=200, size_bytes=10),
            ],
            ["z_big.png", "b_small.png"],
        ),
        (
            [image("a_letterboxed.png", size_bytes=900, border_pixels=40), image("z_original.png", size_bytes=800)],
            ["z_original.png", "a_letterboxed.png"],
        ),
        (
            [
                image("a_light.png", size_bytes=500, first_seen="2020-01-01"),
                image("z_heavy.png", size_bytes=800, first_seen="2025-01-01"),
            ],
            ["z_heavy.png", "a_light.png"],
        ),
        (
            [image("a_late.png", first_seen="2025-06-01"), image("z_early.png", first_seen="2021-06-01")],
            ["z_early.png", "a_late.png"],
        ),
        ([image("b.png"), image("a.png"), image("c.png")], ["a.png", "b.png", "c.png"]),
    ],
    ids=[
        "content_pixels_desc_beats_bytes_and_age",
        "less_border_beats_larger_file",
        "bytes_desc_beats_age_and_path",
        "first_seen_asc_beats_path",
        "path_last",
    ],
)
def test_resolution_policy_tie_breaks(rows, expected):
    assert ranking(rows, "resolution") == expected


def test_resolution_policy_full_ordering():
    rows = [
        image("p5.png", content_pixels=50),
        image("p4.png", content_pixels=100, size_bytes=100, first_seen="2024-01-02"),
        image("p3.png", content_pixels=100, size_bytes=100, first_seen="2024-01-01"),
        image("p2b.png", content_pixels=100, size_bytes=200),
        image("p2a.png", content_pixels=100, size_bytes=200),
        image("p1.png", content_pixels=400, size_bytes=1),
    ]
    assert ranking(rows) == ["p1.png", "p2a.png", "p2b.png", "p3.png", "p4.png", "p5.png"]


@pytest.mark.parametrize(
    "policy, expected",
    [("first_seen", ["old.png", "b_new.png", "c_new.png"]), ("path", ["b_new.png", "c_new.png", "old.png"])],
    ids=["first_seen_ignores_resolution", "path_is_lexicographic"],
)
def test_other_policies(policy, expected):
    rows = [
        image("c_new.png", content_pixels=900, size_bytes=900, first_seen="2025-01-01"),
        image("old.png", content_pixels=10, size_bytes=10, first_seen="2019-01-01"),
        image("b_new.png", content_pixels=10, size_bytes=10, first_seen="2025-01-01"),
    ]
    assert ranking(rows, policy) == expected


def test_unknown_policy_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="resolution, first_seen, path"):
        keep_policy_order(pd.DataFrame([image("a.png")]), "largest")


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"shuffle{s}")
def test_keep_policy_is_deterministic_under_row_order(seed):
    rows = [image(f"{c}.png", content_pixels=100 * (i % 3), size_bytes=10 * (i % 2)) for i, c in enumerate("abcdefg")]
    shuffled = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    assert ranking(shuffled) == ranking(rows)
    ranks = keep_policy_order(pd.DataFrame(rows))
    assert sorted(ranks.tolist()) == list(range(len(rows)))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, ["best.png", "mid.png", "worst.png"]),
        ({"worst.png": "keep"}, ["worst.png", "best.png", "mid.png"]),
        ({"best.png": "remove"}, ["mid.png", "worst.png", "best.png"]),
        ({"worst.png": "keep", "mid.png": "keep", "best.png": "remove"}, ["mid.png", "worst.png", "best.png"]),
        ({"not_there.png": "keep"}, ["best.png", "mid.png", "worst.png"]),
    ],
    ids=[
        "no_overrides",
        "keep_pin_first",
        "remove_pin_last",
        "pins_keep_policy_order_among_themselves",
        "unknown_path_ignored",
    ],
)
def test_overrides_rank_before_and_after_the_policy(overrides, expected):
    rows = [
        image("worst.png", content_pixels=10),
        image("best.png", content_pixels=1000),
        image("mid.png", content_pixels=100),
    ]
    assert ranking(rows, "resolution", overrides) == expected


# --- Leader assignment --------------------------------------------------------------------------

# A, B, C on a circle: A~B and B~C are near-duplicates (d = 0.06, uniqueness 0.03), A~C is not (d ~ 0.233).
STEP = angle_for_distance(0.06)
CHAIN_VECTORS = {"A": unit(0.0), "B": unit(STEP), "C": unit(2 * STEP)}


@pytest.mark.parametrize(
    "pixels, expected_groups",
    [
        ({"A": 300, "B": 200, "C": 100}, [{"A", "B"}, {"C"}]),
        ({"A": 100, "B": 200, "C": 300}, [{"C", "B"}, {"A"}]),
        ({"A": 200, "B": 300, "C": 100}, [{"A", "B", "C"}]),
    ],
    ids=["A_first_C_alone", "C_first_A_alone", "B_first_takes_both"],
)
def test_leader_assignment_does_not_chain(pixels, expected_groups):
    assert 1 - math.cos(2 * STEP) > Thresholds().near_duplicate_cosine_distance
    rows = [image(name, name, content_pixels=pixels[name]) for name in "ABC"]
    _, _, groups = run_groups(rows, CHAIN_VECTORS)
    groups = by_path(groups)
    members: dict[str, set] = {}
    for path, row in groups.iterrows():
        key = row["group_id"] if not missing(row["group_id"]) else f"singleton:{path}"
        members.setdefault(key, set()).add(path)
    assert sorted(members.values(), key=sorted) == sorted(expected_groups, key=sorted)
    leader = max(pixels, key=pixels.get)
    assert not groups.loc[leader, "removed"]
    assert missing(groups.loc[leader, "relation"])


def test_chained_image_stays_a_singleton_and_is_kept():
    rows = [image(name, name, content_pixels=p) for name, p in zip("ABC", (300, 200, 100))]
    _, scores, groups = run_groups(rows, CHAIN_VECTORS)
    groups, scores = by_path(groups), by_path(scores)
    assert missing(groups.loc["C", "group_id"]) and not groups.loc["C", "removed"]
    assert groups.loc["B", "removed"] and groups.loc["B", "duplicate_of"] == "A"
    # C's score still reflects its near-duplicate neighbour B (score and groups are separate rules).
    assert scores.loc["C", "label"] == LABEL_NEAR_DUPLICATE


def _relations_dataset():
    rows = [
        image("keeper.png", "K", content_pixels=1000),
        image("copy.png", "K"),
        image("recompressed.png", "R"),
        image("near.png", "N"),
        image("edge.png", "E"),
        image("far.png", "F"),
    ]
    vectors = {
        "K": unit(0.0),
        "R": unit(angle_for_distance(1.6e-4)),  # uniqueness 8e-5: duplicate
        "N": unit(-angle_for_distance(0.04)),  # 0.02: near-duplicate
        "E": unit(angle_for_distance(0.096)),  # 0.048: near-duplicate, close to the edge
        "F": unit(math.pi / 2),  # 0.5: unique
    }
    return rows, vectors


def test_relation_duplicate_vs_near_duplicate():
    rows, vectors = _relations_dataset()
    _, _, groups = run_groups(rows, vectors)
    groups = by_path(groups)
    keeper_id = image_id_for("keeper.png")
    expected_relation = {
        "copy.png": LABEL_DUPLICATE,
        "recompressed.png": LABEL_DUPLICATE,
        "near.png": LABEL_NEAR_DUPLICATE,
        "edge.png": LABEL_NEAR_DUPLICATE,
    }
    for path, relation in expected_relation.items():
        assert groups.loc[path, "relation"] == relation, path
        assert groups.loc[path, "group_id"] == keeper_id
        assert groups.loc[path, "group_keeper"] == "keeper.png"
    assert groups.loc["keeper.png", "group_id"] == keeper_id and missing(groups.loc["keeper.png", "relation"])
    assert missing(groups.loc["far.png", "group_id"]) and missing(groups.loc["far.png", "relation"])
    assert groups.loc["copy.png", "pair_uniqueness"] == 0.0
    assert groups.loc["recompressed.png", "pair_uniqueness"] == pytest.approx(8e-5, abs=1e-6)
    assert groups.loc["near.png", "pair_uniqueness"] == pytest.approx(0.02, abs=1e-6)
    assert groups.loc["edge.png", "pair_uniqueness"] == pytest.approx(0.048, abs=1e-6)


def test_reason_names_the_keeper_and_the_pair_distance_as_it_reads_in_the_scores():
    rows, vectors = _relations_dataset()
    _, _, groups = run_groups(rows, vectors)
    reasons = by_path(groups)["reason"]
    # An exact copy's distance to its keeper is 0, written as 0 (not 0.00e+00 beside a score of 1e-09).
    assert reasons["copy.png"] == "duplicate of keeper.png (distance to it 0)"
    assert reasons["recompressed.png"] == "duplicate of keeper.png (distance to it 8e-05)"
    assert reasons["near.png"] == "near-duplicate of keeper.png (distance to it 0.02)"


@pytest.mark.parametrize(
    "duplicate, near_duplicate, removed",
    [
        (1e-4, 0.05, {"copy.png", "recompressed.png", "near.png", "edge.png"}),
        (1e-4, 0.03, {"copy.png", "recompressed.png", "near.png"}),
        (1e-4, 0.01, {"copy.png", "recompressed.png"}),
        (1e-5, 1e-4, {"copy.png", "recompressed.png"}),
    ],
    ids=["defaults", "near_0.03_drops_edge", "near_0.01_drops_near", "tight_keeps_only_copies"],
)
def test_group_membership_follows_the_near_duplicate_threshold(duplicate, near_duplicate, removed):
    rows, vectors = _relations_dataset()
    _, _, groups = run_groups(rows, vectors, thresholds=Thresholds(duplicate=duplicate, near_duplicate=near_duplicate))
    assert set(groups.loc[groups["removed"], "path"]) == removed


@pytest.mark.parametrize("action", ["remove", "review"])
def test_near_duplicate_action(action):
    rows, vectors = _relations_dataset()
    _, _, groups = run_groups(rows, vectors, action=action)
    groups = by_path(groups)
    # Duplicates are removed whatever the action.
    for path in ("copy.png", "recompressed.png"):
        assert groups.loc[path, "removed"] and groups.loc[path, "duplicate_of"] == "keeper.png"
        assert groups.loc[path, "reason"].startswith("duplicate of keeper.png")
    for path in ("near.png", "edge.png"):
        if action == "remove":
            assert groups.loc[path, "removed"]
            assert groups.loc[path, "duplicate_of"] == "keeper.png"
            assert groups.loc[path, "reason"].startswith("near-duplicate of keeper.png")
        else:
            assert not groups.loc[path, "removed"]
            assert missing(groups.loc[path, "duplicate_of"])
            assert groups.loc[path, "reason"].startswith("kept for review: near-duplicate of keeper.png")
            assert groups.loc[path, "relation"] == LABEL_NEAR_DUPLICATE  # still listed for review
    for path in ("keeper.png", "far.png"):
        assert not groups.loc[path, "removed"] and missing(groups.loc[path, "duplicate_of"])


def test_unknown_near_duplicate_action_is_rejected():
    rows, vectors = _relations_dataset()
    with pytest.raises(ValueError, match="near_duplicate_action"):
        run_groups(rows, vectors, action="delete")


def test_groups_do_not_depend_on_row_order():
    rows, vectors = _relations_dataset()
    _, _, expected = run_groups(rows, vectors)
    for seed in range(3):
        shuffled = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
        _, _, groups = run_groups(shuffled, {h: vectors[h] for h in reversed(list(vectors))})
        pd.testing.assert_frame_equal(groups, expected)


def test_identical_group_is_never_split_between_leaders():
    # Two copies of X sit between two leaders; they must join the same group.
    rows = [
        image("L1", "L1", content_pixels=900),
        image("L2", "L2", content_pixels=800),
        image("x1", "X"),
        image("x2", "X"),
    ]
    vectors = {"L1": unit(0.0), "L2": unit(2 * angle_for_distance(0.04)), "X": unit(angle_for_distance(0.04))}
    _, _, groups = run_groups(rows, vectors)
    groups = by_path(groups)
    assert groups.loc["x1", "group_id"] == groups.loc["x2", "group_id"] == image_id_for("L1")
    assert groups.loc["x1", "duplicate_of"] == groups.loc["x2", "duplicate_of"] == "L1"


def test_review_mode_clean_set_has_no_pair_within_the_duplicate_threshold():
    theta = angle_for_distance(0.08)
    rows = [image("leader.png", "L", content_pixels=1000), image("a.png", "A"), image("b.png", "B")]
    vectors = {"L": unit(0.0), "A": unit(theta), "B": unit(theta + angle_for_distance(1.5e-4))}
    images, scores, groups = run_groups(rows, vectors, action="review")
    scores = by_path(scores)
    assert scores.loc["a.png", "label"] == scores.loc["b.png", "label"] == LABEL_DUPLICATE
    clean_paths = set(clean_table(images, groups)["path"])
    assert not {"a.png", "b.png"} <= clean_paths


# --- Overrides (review file) --------------------------------------------------------------------


def test_keep_pin_makes_the_worse_copy_the_keeper_in_scores_and_groups():
    rows = [
        image("big.png", "H", content_pixels=1000),
        image("small.png", "H", content_pixels=10),
        image("far.png", "F"),
    ]
    vectors = {"H": unit(0.0), "F": unit(1.0)}
    overrides = {"small.png": "keep"}
    _, scores, groups = run_groups(rows, vectors, overrides=overrides)
    scores, groups = by_path(scores), by_path(groups)
    assert scores.loc["big.png", "uniqueness"] == 0.0 and scores.loc["small.png", "uniqueness"] > 0
    assert groups.loc["big.png", "removed"] and groups.loc["big.png", "duplicate_of"] == "small.png"
    assert not groups.loc["small.png", "removed"]
    assert groups.loc["small.png", "reason"] == "kept: pinned to keep in the review file"


def test_remove_pin_removes_even_a_singleton():
    rows = [image("a.png", "A"), image("b.png", "B")]
    _, _, groups = run_groups(rows, {"A": unit(0.0), "B": unit(1.5)}, overrides={"b.png": "remove"})
    groups = by_path(groups)
    assert (
        groups.loc["b.png", "removed"]
        and groups.loc["b.png", "reason"] == "removed: pinned to remove in the review file"
    )
    assert not groups.loc["a.png", "removed"]


def test_keep_pin_on_a_group_member_wins_over_the_policy():
    rows, vectors = _relations_dataset()
    _, _, groups = run_groups(rows, vectors, overrides={"near.png": "keep", "keeper.png": "keep"})
    groups = by_path(groups)
    assert not groups.loc["near.png", "removed"] and not groups.loc["keeper.png", "removed"]
    assert groups.loc["copy.png", "removed"]


@pytest.mark.parametrize(
    "name, text",
    [
        ("review.csv", "path,decision\na/x.png,keep\nb.png, Remove \nsub\\win.png,KEEP\n"),
        ("review.yaml", "a/x.png: keep\nb.png: remove\nsub\\win.png: keep\n"),
        (
            "review.yml",
            "- {path: a/x.png, decision: keep}\n- {path: b.png, decision: remove}\n- {path: 'sub\\win.png', decision: keep}\n",
        ),
    ],
    ids=["csv", "yaml_mapping", "yaml_list"],
)
def test_read_review_file_formats(tmp_path, name, text):
    review_dir = tmp_path / ".imgdedup"
    review_dir.mkdir()
    (review_dir / name).write_text(text)
    found = find_review_file(tmp_path)
    assert found == review_dir / name
    assert read_review_file(found) == {"a/x.png": "keep", "b.png": "remove", "sub/win.png": "keep"}


def test_review_file_lookup_prefers_csv_and_handles_absence(tmp_path):
    assert find_review_file(tmp_path) is None
    assert read_review_file(None) == {}
    (tmp_path / ".imgdedup").mkdir()
    (tmp_path / ".imgdedup" / "review.yaml").write_text("a.png: keep\n")
    (tmp_path / ".imgdedup" / "review.csv").write_text("path,decision\na.png,remove\n")
    assert read_review_file(find_review_file(tmp_path)) == {"a.png": "remove"}


@pytest.mark.parametrize(
    "name, text",
    [
        ("review.csv", "path,decision\nx.png,delete\n"),
        ("review.yaml", "x.png: maybe\n"),
        ("review.csv", "path\nx.png\n"),
    ],
    ids=["csv_bad_word", "yaml_bad_word", "csv_missing_column"],
)
def test_invalid_review_decision_names_the_row(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match="x.png"):
        read_review_file(path)


def test_empty_yaml_review_file_pins_nothing(tmp_path):
    path = tmp_path / "review.yaml"
    path.write_text("")
    assert read_review_file(path) == {}


# --- Collections: interchange, Duplicates, clean, accounting -------------------------------------


@pytest.fixture
def pipeline():
    rows, vectors = _relations_dataset()
    rows.append(image("another/unique.png", "U"))
    vectors["U"] = unit(math.pi)
    images, scores, groups = run_groups(rows, vectors)
    return images, scores, groups


def test_interchange_table_columns_and_order(pipeline):
    _, scores, groups = pipeline
    table = interchange_table(scores, groups)
    assert list(table.columns[:5]) == ["path", "uniqueness", "label", "group_id", "duplicate_of"]
    assert INTERCHANGE_COLUMNS == ["path", "uniqueness", "label", "group_id", "duplicate_of"]
    assert len(table) == len(scores) and table["path"].is_unique
    ordered = table.sort_values(["uniqueness", "path"], ignore_index=True)
    assert table["path"].tolist() == ordered["path"].tolist()
    assert table["uniqueness"].is_monotonic_increasing


def test_interchange_table_group_and_keeper_columns(pipeline):
    _, scores, groups = pipeline
    table = interchange_table(scores, groups).set_index("path")
    keeper_id = image_id_for("keeper.png")
    members = ["keeper.png", "copy.png", "recompressed.png", "near.png", "edge.png"]
    assert (table.loc[members, "group_id"] == keeper_id).all()
    for singleton in ("far.png", "another/unique.png"):
        assert missing(table.loc[singleton, "group_id"]) and missing(table.loc[singleton, "duplicate_of"])
    assert missing(table.loc["keeper.png", "duplicate_of"])
    assert (table.loc[members[1:], "duplicate_of"] == "keeper.png").all()
    # Sorting ascending by uniqueness lists what the pipeline calls duplicates first.
    removed_labels = set(table.loc[table["removed"], "label"])
    assert removed_labels <= {LABEL_DUPLICATE, LABEL_NEAR_DUPLICATE}
    assert (
        table.loc[table["removed"], "uniqueness"].max()
        <= table.loc[~table["removed"] & table["group_id"].isna(), "uniqueness"].min()
    )


def test_interchange_table_round_trips_through_csv(pipeline, tmp_path):
    _, scores, groups = pipeline
    table = interchange_table(scores, groups)
    table.to_csv(tmp_path / "uniqueness.csv", index=False)
    loaded = pd.read_csv(tmp_path / "uniqueness.csv", keep_default_na=False)
    assert list(loaded.columns[:5]) == INTERCHANGE_COLUMNS
    row = loaded.set_index("path").loc["far.png"]
    assert row["group_id"] == "" and row["duplicate_of"] == ""
    assert loaded.set_index("path").loc["copy.png", "duplicate_of"] == "keeper.png"


def test_duplicates_table_is_exactly_the_removed_rows(pipeline):
    _, scores, groups = pipeline
    duplicates = duplicates_table(interchange_table(scores, groups))
    assert set(duplicates["path"]) == {"copy.png", "recompressed.png", "near.png", "edge.png"}
    assert (duplicates["duplicate_of"] == "keeper.png").all()
    assert duplicates["reason"].str.len().gt(0).all()


@pytest.mark.parametrize("action", ["remove", "review"])
def test_clean_table_and_accounting_invariant(action):
    rows, vectors = _relations_dataset()
    rows.append(image("another/unique.png", "U"))
    vectors["U"] = unit(math.pi)
    images, scores, groups = run_groups(rows, vectors, action=action)
    rejected = pd.DataFrame({"image_id": ["r1", "r2"], "path": ["broken.jpg", "empty.png"]})
    clean = clean_table(images, groups)
    duplicates = duplicates_table(interchange_table(scores, groups))

    assert clean["path"].is_monotonic_increasing
    assert set(clean["path"]).isdisjoint(duplicates["path"])
    assert set(clean["path"]) | set(duplicates["path"]) == set(images["path"])
    assert clean["pixel_hash"].is_unique
    expected_clean = {"keeper.png", "far.png", "another/unique.png"} | (
        {"near.png", "edge.png"} if action == "review" else set()
    )
    assert set(clean["path"]) == expected_clean
    discovered = len(images) + len(rejected)
    summary = accounting(discovered, len(clean), len(duplicates), len(rejected))
    assert summary == {
        "discovered": 9,
        "clean": len(expected_clean),
        "duplicates": 7 - len(expected_clean),
        "rejected": 2,
        "balanced": True,
    }


@pytest.mark.parametrize(
    "discovered, clean, duplicates, rejected, balanced",
    [(10, 5, 3, 2, True), (10, 5, 3, 1, False), (10, 6, 3, 2, False), (0, 0, 0, 0, True)],
    ids=["balanced", "one_missing", "one_extra", "empty"],
)
def test_accounting_detects_imbalance(discovered, clean, duplicates, rejected, balanced):
    assert accounting(discovered, clean, duplicates, rejected)["balanced"] is balanced


def test_collections_do_not_mutate_inputs(pipeline):
    images, scores, groups = pipeline
    before = (images.copy(), scores.copy(), groups.copy())
    clean_table(images, groups)
    interchange_table(scores, groups)
    for after, original in zip((images, scores, groups), before):
        pd.testing.assert_frame_equal(after, original)


def test_no_images_give_an_empty_group_table_with_its_columns():
    scores = pd.DataFrame(columns=["image_id", "path", "pixel_hash", "identical_group"])
    pairs = pd.DataFrame(columns=["left_hash", "right_hash", "distance"])
    groups = assign_groups(scores, pairs, pd.Series(dtype="int64"), Thresholds(1e-6, 0.05))
    assert len(groups) == 0
    assert {"image_id", "path", "group_id", "removed", "duplicate_of", "reason"} <= set(groups.columns)
    assert (
        len(
            duplicates_table(
                interchange_table(
                    pd.DataFrame(
                        columns=["image_id", "path", "uniqueness", "label", "nearest_path", "identical_group_size"]
                    ),
                    groups,
                )
            )
        )
        == 0
    )

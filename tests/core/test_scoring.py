"""Tests for core.scoring and core.search: SPEC.md's uniqueness score, labels and neighbour search.

Every vector is hand-made: 2-D unit vectors at chosen angles give exactly known cosine distances
`d = 1 - cos(angle)`, so each expected uniqueness `d / 2` is written down, not recomputed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.core.grouping import assign_groups, keep_policy_order
from imgdedup_pipeline.core.images import image_id_for
from imgdedup_pipeline.core.scoring import (
    LABEL_DUPLICATE,
    LABEL_NEAR_DUPLICATE,
    LABEL_UNIQUE,
    MIN_NONZERO_UNIQUENESS,
    Thresholds,
    compute_uniqueness_scores,
    label_for,
)
from imgdedup_pipeline.core.search.contents import IDENTICAL_COSINE_DISTANCE, ContentVectors, find_content_neighbors
from imgdedup_pipeline.core.search.engines import search_neighbors
from imgdedup_pipeline.core.search.result import l2_normalize, nearest_outside_group
from imgdedup_pipeline.core.search.signals import NEIGHBORS_PER_ROW, HashSignal

FLOAT32_TOLERANCE = 1e-6  # embeddings are float32: distances carry ~1e-7 of rounding


def angle_for_distance(distance: float) -> float:
    """The angle between two unit vectors whose cosine distance is `distance`."""
    return math.acos(1.0 - distance)


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)], dtype=np.float64)


def image(
    path: str, pixel_hash: str, content_pixels: int = 100, size_bytes: int = 1000, first_seen: str = "2024-01-01"
) -> dict:
    """One catalog row; the image is content_pixels x 1 with no border."""
    return {
        "image_id": image_id_for(path),
        "path": path,
        "pixel_hash": pixel_hash,
        "width": content_pixels,
        "height": 1,
        "content_pixels": content_pixels,
        "bytes": size_bytes,
        "first_seen": pd.Timestamp(first_seen, tz="UTC"),
    }


def score(
    rows: list[dict], vectors: dict[str, np.ndarray], thresholds: Thresholds = Thresholds(), policy: str = "resolution"
) -> pd.DataFrame:
    """Run SPEC.md's scoring on hand-made rows and vectors; the result is indexed by path."""
    images = pd.DataFrame(rows)
    neighbors = find_content_neighbors(vectors, radius=thresholds.near_duplicate_cosine_distance)
    keep_rank = keep_policy_order(images, policy)
    return compute_uniqueness_scores(images, neighbors, keep_rank, thresholds).set_index("path")


# --- Rule 1: identical groups -------------------------------------------------------------------


@pytest.mark.parametrize("copies", [2, 3, 5], ids=lambda n: f"{n}_copies")
def test_identical_copies_score_zero_except_the_keep_policy_keeper(copies):
    # The keeper is the copy with most content pixels; it is deliberately neither first nor last by path.
    keeper_index = copies // 2
    rows = [image(f"copy_{i}.png", "same", content_pixels=1000 if i == keeper_index else 100) for i in range(copies)]
    rows.append(image("other.png", "other"))
    scores = score(rows, {"same": unit(0.0), "other": unit(angle_for_distance(0.3))})

    group = scores.loc[[f"copy_{i}.png" for i in range(copies)]]
    assert (group["uniqueness"] == 0.0).sum() == copies - 1
    assert group.loc[f"copy_{keeper_index}.png", "uniqueness"] == pytest.approx(0.15, abs=FLOAT32_TOLERANCE)
    assert (group["identical_group_size"] == copies).all()
    assert group["identical_group"].nunique() == 1
    assert set(group.drop(index=f"copy_{keeper_index}.png")["label"]) == {LABEL_DUPLICATE}


def test_keeper_of_identical_group_follows_the_policy_not_the_path():
    rows = [
        image("a.png", "same", first_seen="2024-03-01"),
        image("b.png", "same", first_seen="2024-01-01"),
        image("far.png", "far"),
    ]
    vectors = {"same": unit(0.0), "far": unit(angle_for_distance(1.0))}
    by_first_seen = score(rows, vectors, policy="first_seen")
    by_path = score(rows, vectors, policy="path")
    assert by_first_seen.loc["a.png", "uniqueness"] == 0.0 and by_first_seen.loc["b.png", "uniqueness"] > 0
    assert by_path.loc["b.png", "uniqueness"] == 0.0 and by_path.loc["a.png", "uniqueness"] > 0


@pytest.mark.parametrize(
    "distance, identical",
    [(0.0, True), (3e-6, True), (8e-6, True), (5e-5, False), (1e-3, False)],
    ids=["d=0", "d=3e-6", "d=8e-6", "d=5e-5", "d=1e-3"],
)
def test_different_hashes_closer_than_1e5_form_one_identical_group(distance, identical):
    rows = [image("a.png", "hash_a", content_pixels=200), image("b.png", "hash_b"), image("far.png", "far")]
    vectors = {"hash_a": unit(0.0), "hash_b": unit(angle_for_distance(distance)), "far": unit(angle_for_distance(0.5))}
    scores = score(rows, vectors)
    if identical:
        assert scores.loc["a.png", "identical_group"] == scores.loc["b.png", "identical_group"]
        assert scores.loc["b.png", "identical_group_size"] == 2
        assert scores.loc["b.png", "uniqueness"] == 0.0
        # The keeper looks past its float-noise twin to the nearest genuinely different image.
        assert scores.loc["a.png", "uniqueness"] == pytest.approx(0.25, abs=1e-4)
    else:
        assert scores.loc["a.png", "identical_group"] != scores.loc["b.png", "identical_group"]
        assert scores.loc["a.png", "uniqueness"] == pytest.approx(distance / 2, rel=1e-2)
        assert scores.loc["b.png", "uniqueness"] == pytest.approx(distance / 2, rel=1e-2)


def test_identical_groups_chain_float_noise_transitively():
    # a~b and b~c are both below 1e-5 even though a~c (1.6e-5) is not: one group of float noise.
    rows = [
        image("a.png", "ha", content_pixels=300),
        image("b.png", "hb"),
        image("c.png", "hc"),
        image("far.png", "far"),
    ]
    step = angle_for_distance(4e-6)
    vectors = {"ha": unit(0.0), "hb": unit(step), "hc": unit(2 * step), "far": unit(angle_for_distance(1.0))}
    scores = score(rows, vectors)
    assert scores.loc[["a.png", "b.png", "c.png"], "identical_group"].nunique() == 1
    assert list(scores.loc[["a.png", "b.png", "c.png"], "uniqueness"] == 0.0) == [False, True, True]


# --- Rule 2: uniqueness = d(nearest outside the group) / 2 --------------------------------------


@pytest.mark.parametrize(
    "distance",
    [2e-5, 1e-4, 0.01, 0.1, 0.5, 1.0, 1.5, 2.0],
    ids=lambda d: f"d={d}",
)
def test_two_images_each_score_half_their_distance(distance):
    scores = score(
        [image("a.png", "ha"), image("b.png", "hb")], {"ha": unit(0.0), "hb": unit(angle_for_distance(distance))}
    )
    assert scores.loc["a.png", "uniqueness"] == pytest.approx(distance / 2, abs=FLOAT32_TOLERANCE)
    assert scores.loc["b.png", "uniqueness"] == pytest.approx(distance / 2, abs=FLOAT32_TOLERANCE)
    assert scores.loc["a.png", "nearest_path"] == "b.png"
    assert scores.loc["b.png", "nearest_path"] == "a.png"


def test_uniqueness_uses_the_nearest_of_several_images():
    rows = [image(p, p) for p in ("a", "b", "c", "d")]
    # On a circle: a at 0, b at distance 0.02 from a, c at 0.3 from a, d opposite a.
    angles = {"a": 0.0, "b": angle_for_distance(0.02), "c": -angle_for_distance(0.3), "d": math.pi}
    scores = score(rows, {h: unit(a) for h, a in angles.items()})
    assert scores.loc["a", "uniqueness"] == pytest.approx(0.01, abs=FLOAT32_TOLERANCE)
    assert scores.loc["b", "uniqueness"] == pytest.approx(0.01, abs=FLOAT32_TOLERANCE)
    assert scores.loc["c", "uniqueness"] == pytest.approx(0.15, abs=FLOAT32_TOLERANCE)
    expected_d = (1 - math.cos(math.pi - angle_for_distance(0.3))) / 2  # d's nearest is c
    assert scores.loc["d", "uniqueness"] == pytest.approx(expected_d, abs=FLOAT32_TOLERANCE)
    assert scores["nearest_path"].to_dict() == {"a": "b", "b": "a", "c": "a", "d": "c"}


def test_nearest_path_names_the_keeper_of_the_neighbouring_identical_group():
    rows = [
        image("x.png", "hx"),
        image("copy_small.png", "hy", content_pixels=10),
        image("copy_big.png", "hy", content_pixels=500),
    ]
    scores = score(rows, {"hx": unit(0.0), "hy": unit(angle_for_distance(0.4))})
    assert scores.loc["x.png", "nearest_path"] == "copy_big.png"
    assert scores.loc["x.png", "uniqueness"] == pytest.approx(0.2, abs=FLOAT32_TOLERANCE)


def test_vectors_are_normalised_before_scoring():
    scaled = score(
        [image("a.png", "ha"), image("b.png", "hb")],
        {"ha": 7.0 * unit(0.0), "hb": 0.01 * unit(angle_for_distance(0.6))},
    )
    assert scaled.loc["a.png", "uniqueness"] == pytest.approx(0.3, abs=FLOAT32_TOLERANCE)


def test_a_dataset_of_one_scores_one():
    scores = score([image("only.png", "h")], {"h": unit(0.3)})
    assert scores.loc["only.png", "uniqueness"] == 1.0
    assert scores.loc["only.png", "label"] == LABEL_UNIQUE
    assert pd.isna(scores.loc["only.png", "nearest_path"])


@pytest.mark.parametrize("same_hash", [True, False], ids=["equal_pixel_hashes", "float_noise_vectors"])
def test_one_group_of_copies_only_keeper_scores_one(same_hash):
    hashes = ["h", "h", "h"] if same_hash else ["h0", "h1", "h2"]
    rows = [image("a.png", hashes[0]), image("b.png", hashes[1], content_pixels=999), image("c.png", hashes[2])]
    vectors = {h: unit(i * angle_for_distance(2e-6)) for i, h in enumerate(dict.fromkeys(hashes))}
    scores = score(rows, vectors)
    assert scores["uniqueness"].to_dict() == {"a.png": 0.0, "b.png": 1.0, "c.png": 0.0}
    assert scores["label"].to_dict() == {"a.png": LABEL_DUPLICATE, "b.png": LABEL_UNIQUE, "c.png": LABEL_DUPLICATE}


def test_non_copies_are_floored_above_zero():
    # Unreachable through find_content_neighbors (pairs under 1e-5 are merged), so plant a zero
    # distance between two different groups to check that only true copies are exactly 0.
    rows = [image("a.png", "ha"), image("b.png", "hb")]
    neighbors = find_content_neighbors({"ha": unit(0.0), "hb": unit(1.0)}, radius=0.1)
    planted = dataclasses.replace(neighbors, nearest_distance=np.zeros(2, dtype=np.float32))
    images = pd.DataFrame(rows)
    scores = compute_uniqueness_scores(images, planted, keep_policy_order(images), Thresholds()).set_index("path")
    assert scores["uniqueness"].tolist() == [MIN_NONZERO_UNIQUENESS, MIN_NONZERO_UNIQUENESS]
    assert MIN_NONZERO_UNIQUENESS == 1e-9


def test_scores_lie_in_unit_interval_and_are_float64():
    rng = np.random.default_rng(7)
    rows = [image(f"{i:02d}.png", f"h{i % 9}") for i in range(15)]
    vectors = {f"h{i}": rng.normal(size=6) for i in range(9)}
    scores = score(rows, vectors)
    assert scores["uniqueness"].dtype == np.float64
    assert scores["uniqueness"].between(0.0, 1.0).all()
    assert not scores["uniqueness"].isna().any()
    assert len(scores) == 15 and scores.index.is_unique


def test_missing_embedding_is_an_error_naming_the_hash():
    images = pd.DataFrame([image("a.png", "embedded"), image("b.png", "also_embedded"), image("c.png", "not_embedded")])
    neighbors = find_content_neighbors({"embedded": unit(0.0), "also_embedded": unit(1.0)}, radius=0.1)
    with pytest.raises(ValueError, match="not_embedded"):
        compute_uniqueness_scores(images, neighbors, keep_policy_order(images), Thresholds())


def test_missing_keep_rank_is_an_error():
    images = pd.DataFrame([image("a.png", "ha"), image("b.png", "hb")])
    neighbors = find_content_neighbors({"ha": unit(0.0), "hb": unit(1.0)}, radius=0.1)
    partial_rank = keep_policy_order(images.iloc[:1])
    with pytest.raises(ValueError, match="keep_rank"):
        compute_uniqueness_scores(images, neighbors, partial_rank, Thresholds())


def test_empty_input_has_no_neighbours():
    neighbors = find_content_neighbors({}, radius=0.1)
    assert len(neighbors.pixel_hashes) == 0 and len(neighbors.pairs) == 0


# --- Labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uniqueness, expected",
    [
        (0.0, LABEL_DUPLICATE),
        (1e-9, LABEL_DUPLICATE),
        (1e-4, LABEL_DUPLICATE),
        (np.nextafter(1e-4, 1.0), LABEL_NEAR_DUPLICATE),
        (0.01, LABEL_NEAR_DUPLICATE),
        (0.05, LABEL_NEAR_DUPLICATE),
        (np.nextafter(0.05, 1.0), LABEL_UNIQUE),
        (0.5, LABEL_UNIQUE),
        (1.0, LABEL_UNIQUE),
    ],
    ids=[
        "zero",
        "floor",
        "1e-4_inclusive",
        "just_above_1e-4",
        "0.01",
        "0.05_inclusive",
        "just_above_0.05",
        "0.5",
        "one",
    ],
)
def test_default_label_boundaries(uniqueness, expected):
    assert label_for(float(uniqueness), Thresholds()) == expected


@pytest.mark.parametrize(
    "uniqueness, expected",
    [(0.01, LABEL_DUPLICATE), (0.0101, LABEL_NEAR_DUPLICATE), (0.2, LABEL_NEAR_DUPLICATE), (0.2001, LABEL_UNIQUE)],
    ids=["at_duplicate", "above_duplicate", "at_near_duplicate", "above_near_duplicate"],
)
def test_configured_label_boundaries(uniqueness, expected):
    assert label_for(uniqueness, Thresholds(duplicate=0.01, near_duplicate=0.2)) == expected


def test_labels_in_the_score_table_follow_the_thresholds():
    rows = [image(p, p) for p in ("a", "b", "c", "d")]
    angles = {"a": 0.0, "b": angle_for_distance(1e-4), "c": math.pi / 2, "d": math.pi / 2 + angle_for_distance(0.06)}
    scores = score(rows, {h: unit(a) for h, a in angles.items()})
    assert scores["label"].to_dict() == {
        "a": LABEL_DUPLICATE,
        "b": LABEL_DUPLICATE,
        "c": LABEL_NEAR_DUPLICATE,
        "d": LABEL_NEAR_DUPLICATE,
    }
    looser = score(
        rows, {h: unit(a) for h, a in angles.items()}, thresholds=Thresholds(duplicate=0.001, near_duplicate=0.02)
    )
    assert looser["label"].to_dict() == {
        "a": LABEL_DUPLICATE,
        "b": LABEL_DUPLICATE,
        "c": LABEL_UNIQUE,
        "d": LABEL_UNIQUE,
    }


@pytest.mark.parametrize(
    "duplicate, near_duplicate",
    [(-1e-4, 0.05), (0.05, 0.05), (0.1, 0.05), (1e-4, 1.5), (1e-4, -0.1)],
    ids=["negative_duplicate", "equal", "inverted", "near_above_one", "negative_near"],
)
def test_invalid_thresholds_are_rejected(duplicate, near_duplicate):
    with pytest.raises(ValueError, match="duplicate < near_duplicate"):
        Thresholds(duplicate=duplicate, near_duplicate=near_duplicate)


@pytest.mark.parametrize(
    "duplicate, near_duplicate", [(0.0, 1.0), (1e-4, 0.05), (0.0, 1e-9)], ids=["widest", "defaults", "tiny"]
)
def test_valid_thresholds_are_accepted(duplicate, near_duplicate):
    thresholds = Thresholds(duplicate=duplicate, near_duplicate=near_duplicate)
    assert thresholds.near_duplicate_cosine_distance == pytest.approx(2 * near_duplicate)


def test_default_thresholds_are_the_seed_workflow_values():
    assert (Thresholds().duplicate, Thresholds().near_duplicate) == (1e-4, 0.05)
    assert Thresholds().near_duplicate_cosine_distance == pytest.approx(0.1)  # cosine similarity 0.9


# --- Rule 3: independent of discovery order -----------------------------------------------------


def _mixed_dataset():
    rows = [
        image("copies/a.png", "A", content_pixels=100),
        image("copies/b.png", "A", content_pixels=100, size_bytes=2000),
        image("copies/c.png", "A", content_pixels=100, first_seen="2023-01-01"),
        image("noise.png", "A_noise", content_pixels=100),
        image("near.png", "N"),
        image("x.png", "X"),
        image("y.png", "Y"),
        image("z/deep.png", "Z"),
    ]
    vectors = {
        "A": unit(0.0),
        "A_noise": unit(angle_for_distance(3e-6)),
        "N": unit(-angle_for_distance(0.03)),
        "X": unit(1.2),
        "Y": unit(1.2 + angle_for_distance(0.08)),
        "Z": unit(3.0),
    }
    return rows, vectors


@pytest.mark.parametrize("seed", [0, 1, 2, 3], ids=lambda s: f"shuffle{s}")
def test_scores_do_not_depend_on_row_or_dict_order(seed):
    rows, vectors = _mixed_dataset()
    expected = score(rows, vectors)
    rng = np.random.default_rng(seed)
    shuffled_rows = [rows[i] for i in rng.permutation(len(rows))]
    shuffled_vectors = {h: vectors[h] for h in rng.permutation(sorted(vectors))}
    pd.testing.assert_frame_equal(score(shuffled_rows, shuffled_vectors), expected)


def test_mixed_dataset_expected_scores():
    rows, vectors = _mixed_dataset()
    scores = score(rows, vectors)
    # Resolution policy: equal pixels, then bytes -> copies/b.png keeps the identical group.
    assert scores.loc[["copies/a.png", "copies/c.png", "noise.png"], "uniqueness"].tolist() == [0.0, 0.0, 0.0]
    assert scores.loc["copies/b.png", "uniqueness"] == pytest.approx(0.015, abs=1e-4)
    assert scores.loc["near.png", "uniqueness"] == pytest.approx(0.015, abs=1e-4)
    assert scores.loc["near.png", "nearest_path"] == "copies/b.png"
    assert scores.loc["x.png", "uniqueness"] == pytest.approx(0.04, abs=FLOAT32_TOLERANCE)
    assert scores.loc["copies/b.png", "identical_group_size"] == 4


# --- search_neighbors: exact, chunked -----------------------------------------------------------


def _reference_neighbors(vectors: np.ndarray, k: int, radius: float):
    unit_rows = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distance = 1.0 - unit_rows @ unit_rows.T
    np.fill_diagonal(distance, np.inf)
    topk = np.argsort(distance, axis=1, kind="stable")[:, :k]
    pairs = {(int(i), int(j)) for i, j in zip(*np.nonzero(distance <= radius)) if i < j}
    return topk, np.take_along_axis(distance, topk, axis=1), pairs


@pytest.fixture(scope="module")
def random_vectors() -> np.ndarray:
    return np.random.default_rng(42).normal(size=(13, 6))


@pytest.mark.parametrize("chunk_rows", [1, 3, 5, 13, 10_000], ids=lambda c: f"chunk{c}")
def test_search_neighbors_matches_brute_force_for_any_chunking(random_vectors, chunk_rows):
    k, radius = 4, 0.9
    reference_index, reference_distance, reference_pairs = _reference_neighbors(random_vectors, k, radius)
    assert 0 < len(reference_pairs) < 13 * 12 // 2
    # float32 rounding must not be able to move a pair across the radius.
    unit_rows = random_vectors / np.linalg.norm(random_vectors, axis=1, keepdims=True)
    assert np.abs(1.0 - unit_rows @ unit_rows.T - radius).min() > 1e-4

    found = search_neighbors(l2_normalize(random_vectors), k=k, radius=radius, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(found.topk_index, reference_index)
    np.testing.assert_allclose(found.topk_distance, reference_distance, atol=FLOAT32_TOLERANCE)
    assert set(zip(found.pair_left.tolist(), found.pair_right.tolist())) == reference_pairs
    assert (found.pair_left < found.pair_right).all()
    assert (found.pair_distance <= radius).all()
    assert found.topk_index.dtype == np.int64 and found.topk_distance.dtype == np.float32


def test_search_neighbors_is_identical_across_chunk_sizes(random_vectors):
    vectors = l2_normalize(random_vectors)
    results = [search_neighbors(vectors, k=5, radius=1.0, chunk_rows=c) for c in (1, 3, 10_000)]
    for other in results[1:]:
        np.testing.assert_array_equal(other.topk_index, results[0].topk_index)
        np.testing.assert_array_equal(other.pair_left, results[0].pair_left)
        np.testing.assert_array_equal(other.pair_right, results[0].pair_right)
        np.testing.assert_allclose(other.topk_distance, results[0].topk_distance, atol=FLOAT32_TOLERANCE)
        np.testing.assert_allclose(other.pair_distance, results[0].pair_distance, atol=FLOAT32_TOLERANCE)


@pytest.mark.parametrize(
    "rows, k, expected_k",
    [(5, 50, 4), (5, 4, 4), (5, 2, 2), (1, 16, 0)],
    ids=["k_clipped", "k_all", "k_small", "single_row"],
)
def test_search_neighbors_clips_k_and_never_returns_self(rows, k, expected_k):
    vectors = l2_normalize(np.random.default_rng(rows).normal(size=(rows, 3)))
    found = search_neighbors(vectors, k=k, radius=0.5, chunk_rows=2)
    assert found.topk_index.shape == (rows, expected_k)
    assert (found.topk_index >= 0).all()
    for row in range(rows):
        assert row not in found.topk_index[row]
        assert (np.diff(found.topk_distance[row]) >= 0).all()


def test_search_neighbors_distances_are_clipped_to_0_2():
    vectors = l2_normalize(np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))
    found = search_neighbors(vectors, k=2, radius=2.0)
    assert found.topk_distance.min() >= 0.0 and found.topk_distance.max() <= 2.0
    assert found.topk_distance[0].tolist() == pytest.approx([0.0, 2.0])
    assert set(zip(found.pair_left.tolist(), found.pair_right.tolist())) == {(0, 1), (0, 2), (1, 2)}


# --- nearest_outside_group: groups larger than the top-k -----------------------------------------


def cosine_from(vectors: np.ndarray):
    """The exact per-row distance function nearest_outside_group falls back to."""
    return lambda row: np.clip(1.0 - vectors @ vectors[row], 0.0, 2.0)


def test_identical_group_larger_than_top_k_falls_back_to_exact_search():
    copies = NEIGHBORS_PER_ROW + 4  # 20 copies: every top-k neighbour of a copy is another copy
    rows = [image(f"copy_{i:02d}.png", f"c{i:02d}", content_pixels=500 if i == 7 else 100) for i in range(copies)]
    rows += [image("near.png", "near"), image("mid.png", "mid"), image("far.png", "far")]
    vectors = {f"c{i:02d}": unit(0.0) for i in range(copies)}
    vectors |= {"near": unit(angle_for_distance(0.3)), "mid": unit(-angle_for_distance(0.5)), "far": unit(math.pi)}
    scores = score(rows, vectors)

    group = scores.loc[[f"copy_{i:02d}.png" for i in range(copies)]]
    assert group["identical_group"].nunique() == 1
    assert (group["uniqueness"] == 0.0).sum() == copies - 1
    assert group.loc["copy_07.png", "uniqueness"] == pytest.approx(0.15, abs=FLOAT32_TOLERANCE)
    assert group.loc["copy_07.png", "nearest_path"] == "near.png"
    assert scores.loc["near.png", "nearest_path"] == "copy_07.png"
    assert scores.loc["near.png", "uniqueness"] == pytest.approx(0.15, abs=FLOAT32_TOLERANCE)


def test_nearest_outside_group_direct():
    vectors = l2_normalize(np.stack([unit(0.0)] * 20 + [unit(angle_for_distance(0.3)), unit(math.pi)]))
    group = np.array([0] * 20 + [20, 21])
    search = search_neighbors(vectors, k=NEIGHBORS_PER_ROW, radius=IDENTICAL_COSINE_DISTANCE)
    assert (group[search.topk_index[:20]] == 0).all()  # the top-k alone cannot see outside the group
    index, distance = nearest_outside_group(cosine_from(vectors), group, search)
    assert index[:20].tolist() == [20] * 20
    np.testing.assert_allclose(distance[:20], 0.3, atol=FLOAT32_TOLERANCE)
    assert index[20] == 0 and distance[20] == pytest.approx(0.3, abs=FLOAT32_TOLERANCE)
    assert index[21] == 20


def test_nearest_outside_group_with_a_single_row():
    # A single distinct content: k is clipped to 0 and the top-k lists are (1, 0).
    vectors = l2_normalize(np.stack([unit(0.0)]))
    search = search_neighbors(vectors, k=NEIGHBORS_PER_ROW, radius=0.1)
    assert search.topk_index.shape == (1, 0)
    index, distance = nearest_outside_group(cosine_from(vectors), np.zeros(1, dtype=np.int64), search)
    assert index.tolist() == [-1] and np.isinf(distance).all()


def test_nearest_outside_group_without_any_other_group():
    vectors = l2_normalize(np.stack([unit(0.0)] * 3))
    search = search_neighbors(vectors, k=2, radius=0.1)
    index, distance = nearest_outside_group(cosine_from(vectors), np.zeros(3, dtype=np.int64), search)
    assert index.tolist() == [-1, -1, -1]
    assert np.isinf(distance).all()


# --- Fused signals: a perceptual hash beside the embedding ---------------------------------------

ORTHOGONAL = {"a": unit(0.0), "b": unit(math.pi / 2)}  # embedding distance 1.0: only the hash can be close
# A pHash with 32 of 64 bits set, as a picture's is (`core.images.informative_phashes`); flipping
# an even-length run of its low bits keeps 32 set.
PICTURE_HASH = 0x5555_5555_5555_5555


def hashes_bits_apart(bits: int) -> dict[str, np.ndarray]:
    """One-variant 64-bit picture hashes for a and b that differ in exactly `bits` bits."""
    return {"a": np.array([PICTURE_HASH], np.int64), "b": np.array([PICTURE_HASH ^ ((1 << bits) - 1)], np.int64)}


def picture_hashes(rng: np.random.Generator, variants: int = 2) -> np.ndarray:
    """(variants,) int64 random hashes with 32 bits set each, as pHashes of pictures have."""
    return np.array(
        [sum(1 << int(b) for b in rng.choice(64, 32, replace=False)) for _ in range(variants)], np.uint64
    ).view(np.int64)


def score_fused(vectors, hashes, threshold_bits=10, thresholds=Thresholds(), rows=None):
    rows = rows or [image("a.png", "a", content_pixels=200), image("b.png", "b")]
    images = pd.DataFrame(rows)
    neighbors = find_content_neighbors(
        vectors, thresholds.near_duplicate_cosine_distance, HashSignal.from_mapping(hashes, threshold_bits)
    )
    rank = keep_policy_order(images)
    scores = compute_uniqueness_scores(images, neighbors, rank, thresholds)
    groups = assign_groups(scores, neighbors.pairs_by_hash(), rank, thresholds)
    return scores.set_index("path"), groups.set_index("path")


@pytest.mark.parametrize(
    "bits, expected_uniqueness, expected_label",
    [
        (0, MIN_NONZERO_UNIQUENESS, LABEL_DUPLICATE),
        (5, 0.025, LABEL_NEAR_DUPLICATE),
        (10, 0.05, LABEL_NEAR_DUPLICATE),
        (11, 0.5, LABEL_UNIQUE),
        (20, 0.5, LABEL_UNIQUE),
    ],
    ids=[
        "0_bits_floor_not_zero",
        "5_bits",
        "10_bits_exactly_at_threshold",
        "11_bits_just_past_counts_for_nothing",
        "20_bits_counts_for_nothing",
    ],
)
def test_hash_distance_maps_linearly_within_its_cutoff_and_beyond_it_counts_for_nothing(
    bits, expected_uniqueness, expected_label
):
    """SPEC.md: within its cutoff the hash vouches for the match, mapped linearly; beyond it the
    score is the embedding's (ORTHOGONAL: cosine distance 1.0, uniqueness 0.5)."""
    scores, groups = score_fused(ORTHOGONAL, hashes_bits_apart(bits))
    for path in ("a.png", "b.png"):
        assert scores.loc[path, "uniqueness"] == pytest.approx(expected_uniqueness, abs=FLOAT32_TOLERANCE)
        assert scores.loc[path, "uniqueness"] > 0.0  # different contents are never exact copies
        assert scores.loc[path, "label"] == expected_label
    # Groups use the same fused distance as the labels.
    assert bool(groups.loc["b.png", "removed"]) == (expected_label != LABEL_UNIQUE)


@pytest.mark.parametrize(
    "embedding_distance, bits, expected_uniqueness",
    [(0.02, 30, 0.01), (1.0, 2, 0.01), (0.04, 4, 0.02), (0.5, 60, 0.25)],
    ids=["embedding_closer", "hash_closer", "both_equal", "far_on_both_uses_embedding"],
)
def test_fused_distance_is_the_smallest_signal(embedding_distance, bits, expected_uniqueness):
    vectors = {"a": unit(0.0), "b": unit(angle_for_distance(embedding_distance))}
    scores, _ = score_fused(vectors, hashes_bits_apart(bits))
    assert scores.loc["a.png", "uniqueness"] == pytest.approx(expected_uniqueness, abs=FLOAT32_TOLERANCE)


def test_hash_threshold_sets_the_scale():
    scores, _ = score_fused(ORTHOGONAL, hashes_bits_apart(10), threshold_bits=20)
    assert scores.loc["a.png", "uniqueness"] == pytest.approx(0.025, abs=1e-7)
    looser, _ = score_fused(
        ORTHOGONAL, hashes_bits_apart(10), threshold_bits=10, thresholds=Thresholds(near_duplicate=0.2)
    )
    assert looser.loc["a.png", "uniqueness"] == pytest.approx(0.2, abs=1e-6)  # 10 bits sits at the configured 0.2


MASK_F0 = 0b1111_0000
LOW_20 = (1 << 20) - 1
HIGH_30 = ((1 << 30) - 1) << 30


@pytest.mark.parametrize(
    "hash_a, hash_b, expected_uniqueness",
    [
        ([0, MASK_F0], [MASK_F0, LOW_20], MIN_NONZERO_UNIQUENESS),
        ([MASK_F0, LOW_20], [0, MASK_F0], MIN_NONZERO_UNIQUENESS),
        ([0, HIGH_30], [(1 << 8) - 1, HIGH_30], 0.04),
    ],
    ids=["b_identity_is_a_variant_of_a", "a_identity_is_a_variant_of_b", "variants_not_compared_with_each_other"],
)
def test_hash_distance_compares_identity_with_the_other_variants(hash_a, hash_b, expected_uniqueness):
    # Relative to a picture's hash (xor keeps every distance).
    hashes = {"a": np.array(hash_a, np.int64) ^ PICTURE_HASH, "b": np.array(hash_b, np.int64) ^ PICTURE_HASH}
    scores, _ = score_fused(ORTHOGONAL, hashes)
    assert scores.loc["a.png", "uniqueness"] == pytest.approx(expected_uniqueness, abs=FLOAT32_TOLERANCE)
    assert scores.loc["b.png", "uniqueness"] == scores.loc["a.png", "uniqueness"]  # symmetric


@pytest.mark.parametrize("threshold_bits", [0, None], ids=["threshold_0_turns_it_off", "no_hash_signal"])
def test_without_a_hash_signal_only_the_embedding_counts(threshold_bits):
    rows = [image("a.png", "a"), image("b.png", "b")]
    images = pd.DataFrame(rows)
    signal = None if threshold_bits is None else HashSignal.from_mapping(hashes_bits_apart(1), threshold_bits)
    neighbors = find_content_neighbors(ORTHOGONAL, 0.1, signal)
    scores = compute_uniqueness_scores(images, neighbors, keep_policy_order(images), Thresholds())
    assert scores["uniqueness"].tolist() == pytest.approx([0.5, 0.5], abs=FLOAT32_TOLERANCE)


def test_fused_exact_fallback_for_a_group_larger_than_top_k():
    copies = NEIGHBORS_PER_ROW + 4
    rows = [image(f"copy_{i:02d}.png", f"c{i:02d}", content_pixels=500 if i == 3 else 100) for i in range(copies)]
    rows.append(image("other.png", "other"))
    vectors = {f"c{i:02d}": unit(0.0) for i in range(copies)} | {"other": unit(math.pi / 2)}
    hashes = {f"c{i:02d}": np.array([PICTURE_HASH], np.int64) for i in range(copies)} | {
        "other": np.array([PICTURE_HASH ^ 0b1111], np.int64)
    }
    scores, _ = score_fused(vectors, hashes, rows=rows)
    assert scores.loc["copy_03.png", "uniqueness"] == pytest.approx(0.02, abs=1e-7)  # 4 bits via the fallback
    assert (scores.drop(index=["copy_03.png", "other.png"])["uniqueness"] == 0.0).all()


@pytest.mark.parametrize("seed", [0, 1], ids=lambda s: f"shuffle{s}")
def test_fused_scores_do_not_depend_on_order(seed):
    rows, vectors = _mixed_dataset()
    rng = np.random.default_rng(100)
    hashes = {h: picture_hashes(rng) for h in vectors}
    hashes["Z"] = hashes["X"] ^ np.int64(0b111)  # Z is 3 bits from X by hash only
    expected, _ = score_fused(vectors, hashes, rows=rows)
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled, _ = score_fused(
        {h: vectors[h] for h in reversed(list(vectors))},
        {h: hashes[h] for h in reversed(list(hashes))},
        rows=[rows[i] for i in order],
    )
    pd.testing.assert_frame_equal(shuffled, expected)
    assert expected.loc["z/deep.png", "uniqueness"] == pytest.approx(0.015, abs=1e-7)


# --- A secondary signal only vouches for a match (SPEC.md, "several signals") ---------------------


def random_contents(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` random 32-d embeddings: pairwise cosine distances around 1, all unique."""
    rng = np.random.default_rng(seed)
    return {f"h{i:03d}": rng.standard_normal(32) for i in range(count)}


def scores_of(vectors: dict, hash_signal: HashSignal | None, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    images = pd.DataFrame([image(f"{h}.png", h) for h in vectors])
    neighbors = find_content_neighbors(vectors, thresholds.near_duplicate_cosine_distance, hash_signal)
    return compute_uniqueness_scores(images, neighbors, keep_policy_order(images), thresholds).set_index("path")


def test_a_unique_images_score_is_its_embedding_distance():
    """Hashes 12-30 bits apart (the Hamming noise of unrelated pictures is 20-40) used to lower
    every unique score to bits x 0.005; now they change nothing, while a pair within the cutoff
    still matches."""
    vectors = random_contents(40)
    rng = np.random.default_rng(1)
    hashes = {h: picture_hashes(rng, 1) for h in vectors}
    for before, after in zip(list(vectors), list(vectors)[1:]):  # each 12-30 bits from the one before
        flipped = rng.choice(32, int(rng.integers(6, 16)), replace=False)  # pairs of bits
        hashes[after] = hashes[before] ^ np.int64(
            sum(0b11 << (2 * int(b)) for b in flipped) - (1 << 64) * (31 in flipped)
        )
    hashes["h001"] = hashes["h000"] ^ np.int64(0b11_0000)  # 2 bits: vouched for
    embedding_only = scores_of(vectors, None)
    fused = scores_of(vectors, HashSignal.from_mapping(hashes, threshold_bits=10))
    assert (embedding_only["label"] == LABEL_UNIQUE).all()
    assert fused.loc["h000.png", "uniqueness"] == pytest.approx(0.01, abs=FLOAT32_TOLERANCE)  # 2 of 10 bits x 0.05
    unique = fused.drop(index=["h000.png", "h001.png"])
    assert (unique["label"] == LABEL_UNIQUE).all()
    pd.testing.assert_series_equal(unique["uniqueness"], embedding_only.loc[unique.index, "uniqueness"])
    assert unique["uniqueness"].max() > 0.32  # the old ceiling: 64 bits x 0.005


@pytest.mark.parametrize("threshold_bits", [4, 10, 20], ids=lambda b: f"cutoff_{b}_bits")
def test_a_hash_beyond_its_cutoff_changes_nothing(threshold_bits):
    vectors = {"a": unit(0.0), "b": unit(angle_for_distance(0.3)), "c": unit(angle_for_distance(0.8))}
    hashes = {
        h: np.array([PICTURE_HASH ^ mask], np.int64)
        for h, mask in (("a", 0), ("b", (1 << (threshold_bits + 2)) - 1), ("c", ((1 << 30) - 1) << 32))
    }  # disjoint runs: b-c = b + 30 bits
    embedding_only = scores_of(vectors, None)
    fused = scores_of(vectors, HashSignal.from_mapping(hashes, threshold_bits))
    pd.testing.assert_frame_equal(fused, embedding_only)
    assert (fused["label"] == LABEL_UNIQUE).all()
    assert fused.loc["a.png", "uniqueness"] == pytest.approx(0.15, abs=FLOAT32_TOLERANCE)  # b's embedding distance


FLAT = 0  # `core.images.dihedral_phashes` of a flat image
OLD_FLAT = -(1 << 63)  # 0x8000000000000000: a solid colour's pHash in catalogs from before the rule
RAMP = -(1 << 63) | (1 << 55)  # a grey ramp's pHash: 2 bits set


@pytest.mark.parametrize(
    "hash_a, hash_b",
    [
        (FLAT, FLAT),
        (OLD_FLAT, OLD_FLAT),
        (FLAT, OLD_FLAT),
        (OLD_FLAT, RAMP),
        (FLAT, PICTURE_HASH ^ ((1 << 32) - 1) ^ ((1 << 48) - 1)),
    ],
    ids=[
        "two_flat_images",
        "two_flat_images_old_catalog",
        "black_and_a_colour",
        "a_dot_and_a_gradient",
        "flat_and_a_hash_with_16_bits_set",
    ],
)
def test_hashes_without_information_never_count(hash_a, hash_b):
    """Solid red, green, blue, white and black all hash alike (SPEC.md: for flat images only the
    embedding and exact pixel identity decide)."""
    hashes = {"a": np.array([hash_a] * 8, np.int64), "b": np.array([hash_b] * 8, np.int64)}
    fused = scores_of(ORTHOGONAL, HashSignal.from_mapping(hashes, threshold_bits=10))
    assert fused["uniqueness"].tolist() == pytest.approx([0.5, 0.5], abs=FLOAT32_TOLERANCE)
    assert (fused["label"] == LABEL_UNIQUE).all()


def test_flat_images_still_match_by_embedding_and_by_pixel_identity():
    vectors = {"red": unit(0.0), "red_resized": unit(angle_for_distance(0.02)), "green": unit(math.pi / 2)}
    rows = [
        image("red.png", "red"),
        image("red_copy.png", "red"),
        image("red_resized.png", "red_resized"),
        image("green.png", "green"),
    ]
    images = pd.DataFrame(rows)
    signal = HashSignal.from_mapping({h: np.zeros(8, np.int64) for h in vectors}, threshold_bits=10)
    neighbors = find_content_neighbors(vectors, Thresholds().near_duplicate_cosine_distance, signal)
    scores = compute_uniqueness_scores(images, neighbors, keep_policy_order(images), Thresholds()).set_index("path")
    assert sorted(scores.loc[["red.png", "red_copy.png"], "uniqueness"]) == pytest.approx(
        [0.0, 0.01], abs=FLOAT32_TOLERANCE
    )
    assert scores.loc["red_resized.png", "uniqueness"] == pytest.approx(0.01, abs=FLOAT32_TOLERANCE)
    assert scores.loc["green.png", "label"] == LABEL_UNIQUE


def test_vouched_matches_keep_only_informative_pairs_within_the_cutoff():
    flat, picture = np.zeros(8, np.uint64), np.full(8, PICTURE_HASH, np.uint64)
    phashes = np.stack([flat, picture, flat, picture ^ np.uint64(0b111), picture ^ np.uint64(((1 << 12) - 1) << 20)])
    matches, update = HashSignal.from_mapping({}, threshold_bits=10).vouched_matches(
        phashes, np.zeros((len(phashes), 4), np.uint64), radius=0.1, k=4
    )
    assert list(zip(matches.pair_left.tolist(), matches.pair_right.tolist())) == [(1, 3)]
    assert matches.pair_distance.tolist() == pytest.approx([0.03])  # 3 bits of 10 -> 0.3 x 0.1
    assert matches.topk_index[[0, 2, 4]].max() == -1 and np.isinf(matches.topk_distance[[0, 2, 4]]).all()
    assert matches.topk_index[1, 0] == 3 and matches.topk_index[3, 0] == 1
    assert update.searched_rows == 3 and update.mode == "full"


def test_a_turned_hash_match_counts_only_where_the_edges_agree():
    """Opposite quarters of a fundus photo match under a flip in pHash; only the true turned copy
    of a quarter is vouched for, in the pairs and in the per-row distances alike."""
    from PIL import Image

    from imgdedup_pipeline.core.images import perceptual_hashes
    from tests.synthetic_images import sample_photo

    retina = sample_photo("retina").resize((512, 512))
    pictures = {
        "quarter": retina.crop((0, 0, 256, 256)),
        "opposite": retina.crop((0, 256, 256, 512)),  # the quarter below: a vertical flip apart in pHash
        "turned_copy": retina.crop((0, 0, 256, 256)).transpose(Image.Transpose.ROTATE_270),
    }
    hashes = {name: perceptual_hashes(picture) for name, picture in pictures.items()}
    phash_only = HashSignal.from_mapping({n: h for n, (h, _) in hashes.items()}, threshold_bits=10)
    signal = HashSignal.from_mapping({n: h for n, (h, _) in hashes.items()}, 10, {n: e for n, (_, e) in hashes.items()})
    names = list(phash_only.pixel_hashes)  # sorted: opposite, quarter, turned_copy

    def vouched(hash_signal: HashSignal) -> set[tuple[str, str]]:
        found, _ = hash_signal.vouched_matches(hash_signal.hashes, hash_signal.edge_hashes, radius=0.1)
        return {(names[a], names[b]) for a, b in zip(found.pair_left, found.pair_right, strict=True)}

    assert ("opposite", "quarter") in vouched(phash_only)  # edges all equal: the pHash alone decides
    assert vouched(signal) == {("quarter", "turned_copy")}
    informative = np.ones(3, bool)
    from_quarter = signal.vouched_distances_from(signal.hashes, signal.edge_hashes, informative, 1, radius=0.1)
    assert np.isinf(from_quarter[0]) and from_quarter[2] <= 0.1  # [1] is the row itself


def test_a_reader_of_the_vectors_is_called_after_the_hash_search_with_the_same_result(monkeypatch):
    """Given a reader, the pHash search runs before the vectors are read (the 1M stage's peak);
    the neighbours are those of the vectors given directly; a reader of other contents is refused."""
    vectors = random_contents(30)
    rng = np.random.default_rng(2)
    hashes = {h: picture_hashes(rng, 1) for h in vectors}
    hashes["h003"] = hashes["h001"] ^ np.int64(0b1011)  # 3 bits: a pair only the hash vouches for
    signal = HashSignal.from_mapping(hashes, threshold_bits=10)
    radius = Thresholds().near_duplicate_cosine_distance
    order = []
    search_hashes = HashSignal.vouched_pairs

    def recorded_hash_search(self, *args):
        order.append("hash")
        return search_hashes(self, *args)

    def read() -> ContentVectors:
        order.append("read")
        return ContentVectors.from_mapping(vectors)

    monkeypatch.setattr(HashSignal, "vouched_pairs", recorded_hash_search)
    from_reader = find_content_neighbors(read, radius, signal)
    assert order == ["hash", "read"]
    direct = find_content_neighbors(vectors, radius, signal)
    pd.testing.assert_frame_equal(from_reader.pairs, direct.pairs)
    np.testing.assert_array_equal(from_reader.nearest_distance, direct.nearest_distance)
    assert (1, 3) in set(zip(direct.pairs["left"], direct.pairs["right"]))
    fewer = dict(list(vectors.items())[1:])
    with pytest.raises(ValueError, match="hash signal's contents"):
        find_content_neighbors(lambda: ContentVectors.from_mapping(fewer), radius, signal)


def test_hash_matrix_of_no_contents_is_empty_with_one_column_per_variant():
    """An empty clean set (an empty folder) asks for the hashes of no content at all."""
    matrix = HashSignal.from_mapping({}, threshold_bits=10).matrix([])
    assert matrix.shape == (0, 8) and matrix.dtype == np.uint64

"""core.uniqueness: the scores carry the one keep ranking (and review pins) of the run, and
grouping by what they carry names the same keeper as the scores (issue 15, item 2)."""

import weakref

import numpy as np
import pandas as pd
import pytest

import imgdedup_pipeline.core.uniqueness as uniqueness_module
from imgdedup_pipeline.core.grouping import assign_groups, keep_policy_order
from imgdedup_pipeline.core.images import image_id_for
from imgdedup_pipeline.core.scoring import Thresholds
from imgdedup_pipeline.core.search.contents import ContentVectors
from imgdedup_pipeline.core.uniqueness import ranking_of, score_images, without_changed


def catalog_row(path: str, pixel_hash: str, content_pixels: int) -> dict:
    return {
        "image_id": image_id_for(path),
        "path": path,
        "pixel_hash": pixel_hash,
        "width": content_pixels,
        "height": 1,
        "content_pixels": content_pixels,
        "bytes": 1000,
        "first_seen": pd.Timestamp("2024-01-01", tz="UTC"),
    }


IMAGES = pd.DataFrame(
    [catalog_row("big.png", "a", 200), catalog_row("small.png", "a", 100), catalog_row("other.png", "b", 100)]
)
VECTORS = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}


def scored(tmp_path, pins: dict[str, str], vectors=None):
    return score_images(
        IMAGES,
        VECTORS if vectors is None else vectors,
        Thresholds(),
        keep_policy="resolution",
        review_pins=pins,
        hash_signal=None,
        engine="exact",
        cache_file=tmp_path / "search.npz",
        warn=lambda message: None,
    )


@pytest.mark.parametrize(
    ("pins", "keeper"),
    [({}, "big.png"), ({"small.png": "keep"}, "small.png"), ({"big.png": "remove"}, "small.png")],
    ids=["policy", "pinned-keep", "pinned-remove"],
)
def test_scores_carry_the_ranking_that_chose_their_keeper(tmp_path, pins, keeper):
    result = scored(tmp_path, pins)
    scores = result.scores.set_index("path")
    assert scores.loc[keeper, "uniqueness"] > 0 and (scores.loc[["big.png", "small.png"], "uniqueness"] > 0).sum() == 1
    keep_rank, carried_pins = ranking_of(result.scores)
    assert carried_pins == pins
    expected = keep_policy_order(IMAGES, "resolution", pins)
    assert keep_rank.sort_index().tolist() == expected.sort_index().tolist()
    groups = assign_groups(result.scores, result.pairs, keep_rank, Thresholds(), "remove", carried_pins)
    assert groups.set_index("path").loc["big.png", "group_keeper"] == keeper
    assert set(result.search_modes) == {"embedding"} and result.pairs.empty  # a and b are far apart


def test_files_changed_during_the_run_are_left_out():
    assert without_changed(IMAGES, {"b": "changed"})["path"].tolist() == ["big.png", "small.png"]


def test_vectors_from_a_reader_are_freed_before_the_scores_are_built(tmp_path, monkeypatch):
    """Given a reader, the stage holds the (M, D) matrix only while it searches (its peak at 1M)."""
    matrices = []

    def read_vectors() -> ContentVectors:
        vectors = ContentVectors.from_mapping(VECTORS)
        matrices.append(weakref.ref(vectors.matrix))
        return vectors

    original = uniqueness_module.compute_uniqueness_scores
    alive_when_scoring = []

    def scores_noting_the_matrix(*args, **kwargs):
        alive_when_scoring.append(matrices[0]() is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(uniqueness_module, "compute_uniqueness_scores", scores_noting_the_matrix)
    from_reader = scored(tmp_path / "reader", {}, vectors=read_vectors)
    assert len(matrices) == 1 and alive_when_scoring == [False]
    from_mapping = scored(tmp_path / "mapping", {})
    pd.testing.assert_frame_equal(from_reader.scores, from_mapping.scores)
    pd.testing.assert_frame_equal(from_reader.pairs, from_mapping.pairs)

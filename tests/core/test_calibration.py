"""Tests for core.calibration: edits, the measured pairs (and the user's-own-duplicates trap), the
threshold choice, the sample and the stored thresholds file.

The selection logic runs on hand-made distances and on a deterministic fake embedder; one test runs
the real offline backbone on scikit-image's photos.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from imgdedup_pipeline.core.calibration import (
    EDIT_NAMES,
    HARD_NEGATIVES,
    CalibrationError,
    CalibrationPairs,
    calibrate_threshold,
    calibrated_threshold,
    choose_threshold,
    decided_distances,
    edited_copies,
    measure_calibration_pairs,
    precision_recall_at,
    read_calibrations,
    sample_rows,
    vouching_hamming,
    write_calibration,
)

H = 10  # the pipeline's default hash_threshold_bits


def pairs_from(positive: list[tuple[float, int]], negative: list[tuple[float, int]]) -> CalibrationPairs:
    """CalibrationPairs from (distance, hash_bits) lists; sources and edits do not matter here."""

    def table(rows):
        return pd.DataFrame(
            {
                "source": range(len(rows)),
                "edit": "x",
                "distance": [d for d, _ in rows],
                "hash_bits": [b for _, b in rows],
            }
        )

    return CalibrationPairs(table(positive), table(negative).assign(nearest=0))


# --- the choice on hand-made distances ------------------------------------------------------------


@pytest.mark.parametrize(
    "positive, negative, target, expected",
    [
        # 100 copies at 0.01..0.10, nearest others from 0.2: every copy is kept.
        ([(d / 1000, 40) for d in range(10, 101)], [(0.2 + d / 1000, 40) for d in range(100)], 0.99, 0.1),
        # One other image at 0.055 among 100 copies: precision 0.99+ still holds above it ...
        ([(d / 1000, 40) for d in range(1, 101)], [(0.055, 40)] + [(0.3, 40)] * 99, 0.99, 0.1),
        # ... but not at target 1.0, which stops at the last copy below it.
        ([(d / 1000, 40) for d in range(1, 101)], [(0.055, 40)] + [(0.3, 40)] * 99, 1.0, 0.054),
        # Ten others from 0.051 on: precision falls below 0.99 soon after them.
        (
            [(d / 1000, 40) for d in range(1, 101)],
            [(0.051 + d / 1000, 40) for d in range(10)] + [(0.3, 40)] * 90,
            0.99,
            0.05,
        ),
    ],
    ids=["clean-gap", "one-close-other-tolerated", "one-close-other-at-target-1", "many-close-others"],
)
def test_threshold_is_the_largest_copy_distance_reaching_the_target(positive, negative, target, expected):
    pairs = pairs_from(positive, negative)
    choice = choose_threshold(pairs, H, target)
    assert choice.threshold == pytest.approx(expected)
    assert choice.precision >= target
    positive_d, negative_d = decided_distances(pairs.positives, H), decided_distances(pairs.negatives, H)
    # The next copy beyond T would break the target (or there is none).
    beyond = np.sort(positive_d[positive_d > choice.threshold])
    if len(beyond):
        assert precision_recall_at(beyond[0], positive_d, negative_d)[0] < target


def test_pairs_the_hash_matches_are_decided_at_any_threshold():
    # Copies far apart in the embedding but within H bits count at T = 0: they neither need nor set T.
    pairs = pairs_from([(0.3, 4), (0.4, 9), (0.02, 30), (0.03, 30)], [(0.2, 40), (0.25, 40)])
    np.testing.assert_array_equal(decided_distances(pairs.positives, H), [0.0, 0.0, 0.02, 0.03])
    choice = choose_threshold(pairs, H, 0.99)
    assert choice.threshold == pytest.approx(0.03)
    assert choice.recall == 1.0 and choice.hash_matched_positives == 2
    # With the hash signal off, the far copies would need T >= 0.3, past the others at 0.2 / 0.25:
    # T stays at 0.03 and half the copies are lost.
    without_hash = choose_threshold(pairs, 0, 0.99)
    assert without_hash.threshold == pytest.approx(0.03) and without_hash.recall == 0.5


def test_unreachable_target_raises_with_advice():
    pairs = pairs_from([(0.1, 40), (0.2, 40)], [(0.01, 40), (0.02, 40)])
    with pytest.raises(CalibrationError, match="no threshold reaches precision 0.99"):
        choose_threshold(pairs, H, 0.99)


def test_threshold_stays_above_the_duplicate_threshold():
    pairs = pairs_from([(0.0, 40), (0.0, 40)], [(0.3, 40)])
    assert choose_threshold(pairs, H, 0.99, min_threshold=1e-4).threshold > 1e-4


# --- measured pairs with a deterministic fake embedder ---------------------------------------------


def fake_embed(images: list[Image.Image]) -> np.ndarray:
    """A deterministic stand-in for a model: the 8x8 grey thumbnail, mean-removed (scoring plumbing only)."""
    rows = [
        np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BILINEAR), np.float32).ravel() for image in images
    ]
    return np.stack([row - row.mean() + 1e-3 for row in rows])


def smooth_pattern(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct photo-like picture: blurred coloured noise, different for every seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def sample_with_own_duplicate():
    """Twelve distinct pictures plus a re-compressed copy of the first: the user's own duplicate."""
    originals = [smooth_pattern(seed) for seed in range(12)]
    return [*originals, jpeg(originals[0], 60)]


def test_edits_are_deterministic_and_named():
    image = smooth_pattern(0)
    first, second = edited_copies(image, seed=3), edited_copies(image, seed=3)
    assert [name for name, _ in first] == list(EDIT_NAMES)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for (_, a), (_, b) in zip(first, second))
    assert image.size == (96, 72)  # the input is not modified


def test_users_own_duplicates_are_left_out_of_the_negatives(sample_with_own_duplicate):
    pairs = measure_calibration_pairs(sample_with_own_duplicate, fake_embed, H, seed=0)
    own_copy = len(sample_with_own_duplicate) - 1
    assert (0, own_copy) in pairs.excluded and (own_copy, 0) in pairs.excluded
    # Neither is ever the other's "nearest different original".
    for source, other in ((0, own_copy), (own_copy, 0)):
        assert not (pairs.negatives.loc[pairs.negatives["source"] == source, "nearest"] == other).any()
    assert len(pairs.positives) == len(sample_with_own_duplicate) * len(EDIT_NAMES)
    assert len(query_negatives(pairs)) == len(sample_with_own_duplicate) * (len(EDIT_NAMES) + 1)


def query_negatives(pairs: CalibrationPairs) -> pd.DataFrame:
    """The negatives searched in the population (not the hard negatives cut from an original)."""
    return pairs.negatives[~pairs.negatives["edit"].str.startswith("hard negative")]


def test_hard_negatives_are_two_pictures_cut_from_each_original_measured_as_the_pipeline_would():
    """Halves and opposite quarters of every original are negatives; a flat original's halves are
    one image (equal pixels) and are left out."""
    sample = [smooth_pattern(seed) for seed in range(5)] + [Image.new("RGB", (96, 72), (0, 128, 255))]
    pairs = measure_calibration_pairs(sample, fake_embed, H, seed=0)
    hard = pairs.negatives[pairs.negatives["edit"].str.startswith("hard negative")]
    names = [f"hard negative: {name}" for name, _ in HARD_NEGATIVES]
    assert sorted(hard["edit"].unique()) == sorted(names) and (hard["nearest"] == -1).all()
    assert sorted(hard["source"].unique()) == [0, 1, 2, 3, 4]  # the flat sixth has none
    assert len(hard) == 5 * len(HARD_NEGATIVES)
    left, right = sample[2].crop((0, 0, 48, 72)), sample[2].crop((48, 0, 96, 72))
    vectors = fake_embed([left, right])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    halves = hard[(hard["source"] == 2) & (hard["edit"] == "hard negative: halves")]
    assert halves["distance"].item() == pytest.approx((1.0 - vectors[0] @ vectors[1]) / 2.0, abs=1e-6)
    assert (hard["hash_bits"] == -1).all()  # judged by the embedding alone


def test_own_duplicates_do_not_wreck_precision(sample_with_own_duplicate):
    """The trap: counted as a negative, the own copy (distance ~0) would make every T look bad."""
    pairs = measure_calibration_pairs(sample_with_own_duplicate, fake_embed, H, seed=0)
    choice = choose_threshold(pairs, H, 0.99)
    assert choice.precision >= 0.99 and choice.recall > 0.8
    # What the naive measurement would have seen: the own copy as the nearest other original.
    vectors = fake_embed(sample_with_own_duplicate)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    naive_nearest = (1.0 - vectors[-1] @ vectors[0]) / 2.0
    assert naive_nearest < query_negatives(pairs)["distance"].min()


def test_vouching_hamming_gives_no_bits_where_a_hash_carries_no_information():
    picture = np.full(8, 0x5555_5555_5555_5555, np.uint64)  # 32 bits set, as a picture's pHash
    flat = np.zeros(8, np.uint64)
    population = np.stack([picture ^ np.uint64(0b111), flat, np.full(8, 1 << 63, np.uint64)])
    edges = np.zeros((3, 4), np.uint64)
    assert vouching_hamming(picture, edges[0], population, edges).tolist() == [3, -1, -1]
    assert vouching_hamming(flat, edges[0], population, edges).tolist() == [-1, -1, -1]


def test_flat_images_are_never_matched_by_their_hash_in_calibration():
    """Solid colours all hash alike: neither their copies (positives) nor their nearest other
    original (negatives) may be decided by the hash."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    sample = [smooth_pattern(seed) for seed in range(6)] + [Image.new("RGB", (96, 72), colour) for colour in colours]
    pairs = measure_calibration_pairs(sample, fake_embed, H, seed=0)
    flat = pairs.positives["source"] >= 6
    still_flat = flat & pairs.positives["edit"].isin(
        ["recompress", "downscale", "crop", "blur", "grayscale", "contrast", "rotate", "flip"]
    )
    assert still_flat.sum() == 4 * 8 and (pairs.positives.loc[still_flat, "hash_bits"] == -1).all()
    assert (pairs.positives.loc[~flat, "hash_bits"].between(0, 64)).all()
    flat_originals = pairs.negatives[(pairs.negatives["source"] >= 6) & (pairs.negatives["edit"] == "")]
    assert len(flat_originals) == 4 and (flat_originals["hash_bits"] == -1).all()


def test_too_few_images_is_an_error():
    with pytest.raises(CalibrationError, match="at least 4 distinct images, got 2"):
        measure_calibration_pairs([smooth_pattern(0), smooth_pattern(1)], fake_embed, H)


# --- the sample and the stored file -------------------------------------------------------------


def test_sample_is_deterministic_distinct_and_independent_of_row_order():
    table = pd.DataFrame(
        {"path": [f"{i:03d}.png" for i in range(50)], "pixel_hash": [f"h{i % 40:02d}" for i in range(50)]}
    )
    first = sample_rows(table, 10, seed=1)
    assert first["pixel_hash"].is_unique and len(first) == 10
    pd.testing.assert_frame_equal(first, sample_rows(table.sample(frac=1.0, random_state=7), 10, seed=1))
    assert len(sample_rows(table, 100, seed=1)) == 40


def test_thresholds_file_keeps_every_model(tmp_path):
    path = tmp_path / "state" / "thresholds.json"
    assert calibrated_threshold(path, "model-a") is None
    write_calibration(path, "model-a", {"near_duplicate_threshold": 0.07})
    write_calibration(path, "model-b", {"near_duplicate_threshold": 0.11})
    write_calibration(path, "model-a", {"near_duplicate_threshold": 0.08})
    assert {k: v["near_duplicate_threshold"] for k, v in read_calibrations(path).items()} == {
        "model-a": 0.08,
        "model-b": 0.11,
    }
    assert calibrated_threshold(path, "model-b")[0] == 0.11
    assert calibrated_threshold(path, None) is None
    assert [p.name for p in path.parent.iterdir()] == ["thresholds.json"]  # no temp files left


def test_a_broken_thresholds_file_is_reported(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="is not a thresholds file.*delete it and recalibrate"):
        read_calibrations(path)


# --- the real offline model ---------------------------------------------------------------------

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "coins",
    "clock",
    "brick",
    "grass",
    "gravel",
)


@pytest.mark.slow
def test_offline_model_calibrates_to_a_sane_threshold():
    from skimage import data

    from imgdedup_pipeline.core.embedders import EfficientNetLite0Embedder

    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SKIMAGE_PHOTOS]
    # The trap, for real: skimage's `cat` is `chelsea`, and a re-compressed chelsea is in the sample too.
    photos += [Image.fromarray(data.cat()).convert("RGB"), jpeg(photos[1].resize((300, 200)), 70)]
    outcome = calibrate_threshold(photos, EfficientNetLite0Embedder().embed, H, target_precision=0.99, seed=0)
    choice = outcome.choice
    # Fourteen unrelated photos lie far apart (nearest different photo ~0.28): without the hard
    # negatives the threshold reached ~0.2 out. The halves and quarters of the texture photos (brick,
    # gravel, grass) lie at 0.03-0.07 from each other; the threshold must keep them apart (all six
    # were within ~0.2), stay above float noise and still find most edits.
    assert 0.02 <= choice.threshold < min(0.3, choice.next_negative_distance), choice
    hard = outcome.pairs.negatives[outcome.pairs.negatives["edit"].str.startswith("hard negative")]
    textures = hard[hard["source"].isin([SKIMAGE_PHOTOS.index(name) for name in ("brick", "gravel", "grass")])]
    # At the target precision the sample tolerates ~1 % false pairs: one pair (brick's halves) may stay.
    assert len(textures) == 6 and (textures["distance"] <= choice.threshold).sum() <= 1
    assert textures["distance"].min() < 0.05  # the default threshold would pair them: this tests something
    assert choice.precision >= 0.99 and choice.recall >= 0.8
    per_edit = outcome.record["recall_per_edit"]
    assert min(per_edit[edit] for edit in ("recompress", "blur", "grayscale", "letterbox", "rotate", "flip")) >= 0.9
    assert outcome.record["excluded_own_duplicates"] >= 3  # chelsea / cat / the re-compression
    assert outcome.record["near_duplicate_threshold"] == pytest.approx(choice.threshold, abs=1e-6)

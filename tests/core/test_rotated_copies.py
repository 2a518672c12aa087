"""The turned-copy signal (core/rotated_copies.py) on real photos from scikit-image."""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from imgdedup_pipeline.core.images import describe_image
from imgdedup_pipeline.core.rotated_copies import (
    INLIER_FRACTION_CUTOFF,
    MIN_INLIERS,
    RotatedCopySignal,
    SimilarityMatch,
    hough_line_peaks,
    signal_distance,
    similarity_match,
    vouches_for,
)
from imgdedup_pipeline.core.search.contents import find_content_neighbors
from imgdedup_pipeline.core.search.engines import search_neighbors


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(data.chelsea())  # 451 x 300


@pytest.fixture(scope="module")
def rocket():
    return Image.fromarray(data.rocket())  # 640 x 427


def turned(image: Image.Image, degrees: float) -> Image.Image:
    """Turned on its own canvas, corners filled black, as editors and augmenters do."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)


def turned_degrees(image: Image.Image) -> float | None:
    """The turn the catalog reads from the image's black corners (PNG: its exact pixels)."""
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return describe_image("image.png", data=encoded.getvalue()).turned_degrees


@pytest.mark.parametrize("degrees", [30.0, -30.0, 7.0, 15.0, 3.0, -44.0], ids=lambda d: f"{d:+g}deg")
def test_the_turn_is_read_from_black_corners(photo, degrees):
    found = turned_degrees(turned(photo, degrees))
    assert found is not None and abs(abs(found) - abs(degrees)) <= 1.0


@pytest.mark.parametrize("degrees", [30.0, -20.0, 7.0, 44.0], ids=lambda d: f"{d:+g}deg")
def test_a_copy_turned_on_a_grown_canvas_is_read_and_counts_its_picture_only(photo, degrees):
    """`rotate(expand=True)` (and editors that grow the canvas) leave the picture touching each side
    at a point: its 1-pixel borders are trimmed, and the turn is read all the same; its content
    pixels are a little fewer than the photo's (not the larger canvas's), so the original is kept."""
    from imgdedup_pipeline.core.images import content_pixel_count

    copy = photo.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
    found = turned_degrees(copy)
    assert found is not None and abs(abs(found) - abs(degrees)) <= 1.0
    assert 0.95 * photo.width * photo.height < content_pixel_count(copy) < photo.width * photo.height


def test_a_thin_black_frame_is_not_read_as_turned_corners(photo, rocket):
    """The corners are read inside the trimmed borders: a small picture with a dark wedge reaching
    its bottom edge and a 1-pixel black frame, or a dark photo in a 2-pixel frame, has no turn
    (read on the whole canvas, the frame joined the dark areas into a slanted fill)."""
    from PIL import ImageDraw, ImageEnhance, ImageOps

    small = rocket.copy()
    small.thumbnail((192, 192))
    width, height = small.size
    ImageDraw.Draw(small).polygon(
        [(0.3 * width, height), (0.7 * width, height), (0.5 * width, 0.6 * height)], fill=(5, 5, 5)
    )
    dark = ImageEnhance.Brightness(photo).enhance(0.25)
    for framed in (ImageOps.expand(small, border=1, fill=(0, 0, 0)), ImageOps.expand(dark, border=2, fill=(0, 0, 0))):
        assert turned_degrees(framed) is None


def test_pictures_without_turned_corners_have_no_turn(photo, rocket):
    letterboxed = Image.new("RGB", (photo.width, photo.height + 120))
    letterboxed.paste(photo, (0, 60))
    for image in (photo, rocket, letterboxed, Image.new("RGB", (64, 48)), Image.new("RGB", (64, 48), (255, 255, 255))):
        assert turned_degrees(image) is None


def test_a_turned_zoomed_copy_is_vouched_for_and_a_different_picture_is_not(photo, rocket):
    copy = (
        turned(photo, 30.0)
        .resize((photo.width * 5 // 4, photo.height * 5 // 4))
        .crop((40, 20, 40 + photo.width, 20 + photo.height))
    )
    corners = turned_degrees(copy)
    assert corners is not None
    same = similarity_match(copy, photo)
    assert vouches_for(same, corners) and signal_distance(same, 0.1) <= 0.1
    assert not vouches_for(similarity_match(copy, rocket), corners)


def test_a_match_must_turn_by_the_corners_angle_and_pass_the_cutoff():
    strong = SimilarityMatch(inliers=200, matches=210, turn_degrees=-29.5)
    assert vouches_for(strong, 30.0) and vouches_for(strong, -30.0)
    assert not vouches_for(SimilarityMatch(200, 210, 0.0), 30.0)  # consistent, but not turned
    assert not vouches_for(SimilarityMatch(45, 56, 30.0), 30.0)  # the stereo pair's share of inliers
    assert not vouches_for(SimilarityMatch(MIN_INLIERS - 1, MIN_INLIERS, 30.0), 30.0)
    assert not vouches_for(SimilarityMatch(MIN_INLIERS, 3 * MIN_INLIERS, 30.0), 30.0)


def test_signal_distance_is_linear_with_the_cutoff_on_the_radius():
    at_cutoff = SimilarityMatch(round(100 * INLIER_FRACTION_CUTOFF), 100, 30.0)
    assert signal_distance(at_cutoff, 0.1) == pytest.approx(0.1)
    assert signal_distance(SimilarityMatch(100, 100, 30.0), 0.1) == 0.0


def unit(vectors):
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_find_content_neighbors_pairs_a_turned_copy_only_with_the_signal(photo, rocket):
    """Three contents: the photo, its turned copy (embedding cosine 0.3, beyond the radius 0.1)
    and a different photo turned too; only the true pair is vouched for, at a distance within
    the radius, and the unique photo keeps its embedding distance."""
    images = {"a-photo": photo, "b-turned-copy": turned(photo, 30.0), "c-other-turned": turned(rocket, 30.0)}
    angle = np.arccos(0.7)
    vectors = dict(zip(images, unit([[1, 0, 0], [np.cos(angle), np.sin(angle), 0], [0.6, 0, 0.8]])))
    loaded = []

    def load(pixel_hash, draft):
        loaded.append(pixel_hash)
        return images[pixel_hash]

    turns = {name: turn for name, image in images.items() if (turn := turned_degrees(image)) is not None}
    assert set(turns) == {"b-turned-copy", "c-other-turned"}
    plain = find_content_neighbors(vectors, radius=0.1)
    assert plain.pairs.empty
    fused = find_content_neighbors(vectors, radius=0.1, rotated_copy_signal=RotatedCopySignal(load, turns))
    assert [tuple(fused.pixel_hashes[[r.left, r.right]]) for r in fused.pairs.itertuples()] == [
        ("a-photo", "b-turned-copy")
    ]
    assert fused.pairs["distance"].iloc[0] <= 0.1
    assert fused.nearest_distance[2] == pytest.approx(plain.nearest_distance[2])
    assert fused.updates["rotated_copy"].searched_rows == 2
    assert set(loaded) <= set(images)


def test_a_turned_copy_near_another_copy_is_still_matched_against_its_original(photo):
    """Two turned copies lie within the radius of each other and beyond it of the original: each
    is matched against its nearest contents beyond the radius, so both join the original."""
    images = {"a-photo": photo, "b-turned": turned(photo, 30.0), "c-turned-more": turned(photo, 32.0)}
    vectors = dict(zip(images, unit([[1, 0, 0], [0.7, 0.714, 0], [0.69, 0.72, 0.06]])))
    turns = {name: turned_degrees(image) for name, image in images.items() if name != "a-photo"}

    def load(pixel_hash, draft):
        return images[pixel_hash]

    found = find_content_neighbors(vectors, radius=0.1, rotated_copy_signal=RotatedCopySignal(load, turns))
    pairs = {tuple(found.pixel_hashes[[r.left, r.right]]) for r in found.pairs.itertuples()}
    assert {("a-photo", "b-turned"), ("a-photo", "c-turned-more"), ("b-turned", "c-turned-more")} <= pairs
    assert found.updates["rotated_copy"].searched_rows == 2


def test_only_turned_contents_are_decoded(photo):
    """A content beyond the radius whose catalog row shows no turned corners is not decoded; a
    turned one is, with its neighbours."""
    vectors = dict(zip(["plain", "turned", "neighbour"], unit([[1, 0, 0], [0.6, 0.8, 0], [0.7, 0, 0.71]])))
    loaded = []

    def load(pixel_hash, draft):
        loaded.append(pixel_hash)
        return photo

    find_content_neighbors(vectors, radius=0.1, rotated_copy_signal=RotatedCopySignal(load, {}))
    assert loaded == []
    found = find_content_neighbors(vectors, radius=0.1, rotated_copy_signal=RotatedCopySignal(load, {"turned": 30.0}))
    assert found.updates["rotated_copy"].searched_rows == 1
    assert "turned" in loaded and "plain" in loaded


def test_contents_within_the_radius_or_far_beyond_it_are_never_decoded(photo):
    vectors = dict(zip(["near-1", "near-2", "far"], unit([[1, 0, 0], [0.99, 0.14, 0], [0, 0, 1]])))

    def load(pixel_hash, draft):
        raise AssertionError(f"{pixel_hash} was decoded")

    every_turned = dict.fromkeys(vectors, 30.0)
    found = find_content_neighbors(vectors, radius=0.1, rotated_copy_signal=RotatedCopySignal(load, every_turned))
    assert found.updates["rotated_copy"].searched_rows == 0
    assert len(search_neighbors(np.stack(list(vectors.values())), k=2, radius=0.1).pair_left) == len(found.pairs)


def test_a_turned_copy_counts_fewer_content_pixels_than_its_original(photo):
    """The keep policy ranks by content pixels: the black corners are not content, so the original
    is kept over its turned copy (which has the same width and height)."""
    from imgdedup_pipeline.core.images import content_pixel_count

    copy = turned(photo, 30.0)
    assert content_pixel_count(photo) == photo.width * photo.height
    assert content_pixel_count(copy) < 0.9 * photo.width * photo.height


def hough_inputs():
    """Hough accumulators of the turned-corner test's edge maps (photos turned by many angles,
    one with dark corners of its own) and of noise (many peaks, plateaus and ties)."""
    from scipy import ndimage
    from skimage.transform import hough_line

    edges = []
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "rocket", "retina"):
        image = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for degrees in rng.uniform(-60, 60, 6):
            small = np.asarray(turned(image, float(degrees)).resize((192, 192)))
            black = small.max(axis=2) <= 12
            edges.append(black & ~ndimage.binary_erosion(black))
    for _ in range(12):
        shape = tuple(int(side) for side in rng.integers(20, 192, 2))
        edges.append(rng.random(shape) < rng.uniform(0.002, 0.2))
    angles = np.deg2rad(np.arange(-90.0, 90.0, 0.25))
    return [hough_line(edge, angles) for edge in edges]


def test_hough_line_peaks_equal_scikit_images():
    from skimage.transform import hough_line_peaks as scikit_image_peaks

    compared = 0
    for accumulator, angles, distances in hough_inputs():
        for share, peaks in ((0.25, 8), (0.5, np.inf), (0.1, 3)):
            threshold = share * accumulator.max()
            expected = scikit_image_peaks(accumulator, angles, distances, num_peaks=peaks, threshold=threshold)
            found = hough_line_peaks(accumulator, angles, distances, num_peaks=peaks, threshold=threshold)
            for mine, theirs in zip(found, expected, strict=True):
                assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
                np.testing.assert_array_equal(mine, theirs)
            compared += len(expected[0])
    assert compared > 200  # peaks were found, not only empty answers


def test_a_catalog_without_the_turn_column_proves_no_turned_copy_and_says_so(photo):
    """raw_images pickled by a version before `turned_degrees` (a step re-executed after an
    upgrade): the check runs over no turned content and the step is warned, not failed."""
    import pandas as pd

    from imgdedup_pipeline.core.uniqueness import rotated_copy_signal

    older = pd.DataFrame({"path": ["a.png", "b.png"], "pixel_hash": ["h1", "h2"]})
    warnings = []
    signal = rotated_copy_signal(older, lambda path, draft_size: photo, warnings.append)
    assert signal.turned_degrees == {} and len(warnings) == 1 and "raw_images" in warnings[0]
    current = older.assign(turned_degrees=[float("nan"), 30.0])
    assert rotated_copy_signal(current, lambda path, draft_size: photo, warnings.append).turned_degrees == {"h2": 30.0}
    assert len(warnings) == 1

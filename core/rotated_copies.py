"""A secondary signal for copies turned by an arbitrary angle, with black corners (issue 16).

A copy rotated by e.g. 30° on its own canvas embeds far from its original (uniqueness ~0.18 with
the offline backbone) and its pHash is ~27 bits away, so neither signal finds it. Its black
corners give it away, and say by how much it was turned. Such a content is checked, by local
features (ORB) and a RANSAC similarity transform, against its few nearest contents by embedding;
the signal vouches for a pair only when many features agree on one transform whose rotation is
the angle the corners show (SPEC.md, "several signals"). Nothing here imports Dagster.

Cost: the corner test runs once per file, in the catalog, on the pixels decoded there anyway (most
photos fail it at their 4 corner pixels); scoring decodes only the few contents with turned black
corners, and their nearest neighbours just beyond the near-duplicate radius, to match their
features.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from PIL import Image

from imgdedup_pipeline.core.images import ImageRejected
from imgdedup_pipeline.core.search.result import NeighborSearch

# A pixel whose brightest channel is at most this is part of a black fill (JPEG ringing included;
# higher levels merge dark scenery into the fill and bend its straight edges).
BLACK_MAX_LEVEL = 12
# The corner test runs on the image scaled to this longest side: enough for a straight edge.
CORNER_TEST_SIDE = 192
# Black fill covering less than this share of the image is a dark detail, not turned corners.
MIN_BLACK_FRACTION = 0.01
# More black than this is not corners around a picture: a 3:1 picture turned by 45° on a canvas
# grown to hold it is 62.5 % corners.
MAX_BLACK_FRACTION = 0.65
# Edges within this many degrees of the axes are letterbox borders (trimmed elsewhere), not turns.
MIN_TURN_DEGREES = 1.0
# Share of the fill's edge pixels that must lie on the detected straight lines.
MIN_STRAIGHT_EDGE_FRACTION = 0.5
EDGE_TOLERANCE_PIXELS = 2.0
# Features are matched at this longest side; ORB keypoints per image, its pyramid levels (1.2x
# apart) and corner threshold: fewer levels and weaker corners than ORB's defaults (8, 0.05) cost
# a third less and keep more inliers on turned copies (53-148 on the measured ones).
FEATURE_SIDE = 256
FEATURE_KEYPOINTS = 200
FEATURE_SCALES = 3
FAST_THRESHOLD = 0.06
# A pair is vouched for only with at least this many RANSAC inliers, this share of the
# cross-checked matches (the cutoff: it maps onto the near-duplicate radius), and a transform
# turned by the corners' angle within this many degrees. Measured: turned copies (idealo's and
# bench/edited_copies.py's 12) 53-146 inliers, 0.91-1.0 of their matches; among different
# pictures of the hard-negative set at most 45 of 57 (0.79: the stereo pair, turned 0.3°), then 4.
MIN_INLIERS = 40
INLIER_FRACTION_CUTOFF = 0.85
MAX_ANGLE_DISAGREEMENT_DEGREES = 3.0
# A turned copy's matches are > 85 % inliers: 3 samples all inliers at once in 100 draws fails
# with probability (1 - 0.85**3)**100 < 1e-17.
RANSAC_TRIALS = 100
# A turned content is matched against its nearest contents beyond the radius (those within it are
# matched already) but within this cosine distance; a turned copy sits at ~0.36 from its original.
CANDIDATE_MAX_COSINE_DISTANCE = 0.5
# Nearest contents checked per turned content: on bench/edited_copies.py's set, where a third of the
# images are turned copies, 3 prove 19 pairs, 2 prove 12 and 1 proves 9, each more costing about a
# third of the check (BENCHMARKS.md, "Cost per 100 images").
NEIGHBORS_CHECKED = 3


def _reduced_degrees(degrees: float) -> float:
    """An angle reduced to [-45, 45): rotations by multiples of 90° look alike to an edge."""
    return ((degrees + 45.0) % 90.0) - 45.0


def _scaled_down(rgb: Image.Image, side: int) -> Image.Image:
    scale = side / max(rgb.size)
    if scale >= 1:
        return rgb
    return rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BILINEAR)


def turned_black_corners(rgb: Image.Image) -> tuple[float, float] | None:
    """(degrees in [-45, 45), share of the image its black corners and their edge cover) for an
    image turned on its canvas, read from its black corners; None when it has none.

    The black fill must touch a corner of the image, cover MIN_BLACK_FRACTION to MAX_BLACK_FRACTION
    of it, and end in straight edges that are not parallel to the image's sides (letterboxes).
    """
    # scipy.ndimage and scikit-image are slow to import, and a run with nothing new to decode
    # needs neither. Imported before the early return: `core.images.import_decoding_modules`
    # calls this once in the calling thread, so decoding threads never import them first.
    from scipy import ndimage
    from skimage import measure  # noqa: F401 (used by hough_line_peaks: imported here, see above)
    from skimage.transform import hough_line

    last_x, last_y = rgb.width - 1, rgb.height - 1
    if rgb.mode == "RGB" and not any(
        max(cast(tuple[int, ...], rgb.getpixel(xy))) <= BLACK_MAX_LEVEL
        for xy in ((0, 0), (last_x, 0), (0, last_y), (last_x, last_y))
    ):
        return None  # the common case, decided without scaling the image
    pixels = np.asarray(_scaled_down(rgb.convert("RGB"), CORNER_TEST_SIDE))
    black = pixels.max(axis=2) <= BLACK_MAX_LEVEL
    corners = [black[0, 0], black[0, -1], black[-1, 0], black[-1, -1]]
    if not any(corners) or min(black.shape) < 8:
        return None
    labels, _ = ndimage.label(black)
    corner_labels = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    fill = np.isin(labels, list(corner_labels))
    if not MIN_BLACK_FRACTION <= fill.mean() <= MAX_BLACK_FRACTION:
        return None
    edge = fill & ~ndimage.binary_erosion(fill)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = False
    edge_pixels = int(edge.sum())
    if edge_pixels < 8:
        return None
    accumulator, angles, distances = hough_line(edge, np.deg2rad(np.arange(-90.0, 90.0, 0.25)))
    votes, peak_angles, peak_distances = hough_line_peaks(
        accumulator, angles, distances, num_peaks=8, threshold=0.25 * accumulator.max()
    )
    if len(votes) == 0:
        return None
    turn = _reduced_degrees(float(np.rad2deg(peak_angles[int(np.argmax(votes))])))
    # The lines at that turn (either side of the corner), and the share of the edge on them.
    along = np.abs([_reduced_degrees(float(np.rad2deg(a)) - turn) for a in peak_angles]) <= 1.5
    rows, columns = np.nonzero(edge)
    offsets = np.abs(
        np.outer(columns, np.cos(peak_angles[along]))
        + np.outer(rows, np.sin(peak_angles[along]))
        - peak_distances[along]
    )
    if (offsets.min(axis=1) <= EDGE_TOLERANCE_PIXELS).mean() < MIN_STRAIGHT_EDGE_FRACTION:
        return None
    if abs(turn) < MIN_TURN_DEGREES:
        return None
    # The share includes the fill's 1-pixel edge at this scale: the resampled edge is part fill, and
    # a copy turned on a grown canvas must not count more picture than its original.
    return turn, float(ndimage.binary_dilation(fill).mean())


def hough_line_peaks(
    accumulator: np.ndarray,
    angles: np.ndarray,
    distances: np.ndarray,
    *,
    num_peaks: float = np.inf,
    threshold: float | None = None,
    min_distance: int = 9,
    min_angle: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-image's `hough_line_peaks`, the same answer (tested on turned photos and noise), in
    about a third of its time: it filters only the box around the cells above the threshold and
    reduces the candidate regions with numpy where scikit-image builds an object per region (most
    of the turned-corner test's time, which runs on every dark-cornered image while discovering).

    Returns:
        (votes, angles, distances) of the peaks, strongest first where more than num_peaks.
    """
    from scipy import ndimage
    from skimage import measure

    min_angle = min(min_angle, accumulator.shape[1])
    rows, columns = accumulator.shape
    if threshold is None:
        threshold = 0.5 * float(np.max(accumulator))
    above = accumulator > threshold
    any_row, any_column = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
    if len(any_row) == 0:
        return np.array([]), np.array([]), np.array([])
    # The window of every cell that decides anything lies within this box.
    top, bottom = max(int(any_row[0]) - min_distance, 0), min(int(any_row[-1]) + min_distance + 1, rows)
    left, right = max(int(any_column[0]) - min_angle, 0), min(int(any_column[-1]) + min_angle + 1, columns)
    box = accumulator[top:bottom, left:right]
    box_max = ndimage.maximum_filter1d(box, size=2 * min_distance + 1, axis=0, mode="constant", cval=0)
    box_max = ndimage.maximum_filter1d(box_max, size=2 * min_angle + 1, axis=1, mode="constant", cval=0)
    labels = measure.label(above[top:bottom, left:right] & (box == box_max))
    count = int(labels.max())
    ys, xs = np.nonzero(labels)
    label_of = labels[ys, xs]
    strongest = np.zeros(count + 1, dtype=accumulator.dtype)
    np.maximum.at(strongest, label_of, box_max[ys, xs])
    sizes = np.maximum(np.bincount(label_of, minlength=count + 1), 1).astype(np.float64)
    # Centroids in the whole accumulator's coordinates, rounded as scikit-image rounds them.
    centre_y = np.bincount(label_of, weights=ys + top, minlength=count + 1) / sizes
    centre_x = np.bincount(label_of, weights=xs + left, minlength=count + 1) / sizes
    region = np.arange(1, count + 1)
    # Strongest first; equal ones in descending label order (scikit-image's reversed stable sort).
    order = region[np.lexsort((region, strongest[1:]))][::-1]
    centres = np.round(np.stack([centre_y[order], centre_x[order]], axis=1)).astype(int)
    suppressed = np.zeros(accumulator.shape, bool)
    around_y, around_x = np.mgrid[-min_distance : min_distance + 1, -min_angle : min_angle + 1]
    votes, peak_y, peak_x = [], [], []
    for y, x in centres:
        vote = 0 if suppressed[y, x] else box_max[y - top, x - left]
        if vote > threshold:
            near_y, near_x = y + around_y, x + around_x
            inside = np.logical_and(near_y > 0, near_y < rows)  # scikit-image's bounds, row 0 excluded
            near_y, near_x = near_y[inside], near_x[inside]
            # Angles wrap around: a neighbour past either end is the opposite line at the other.
            low = near_x < 0
            near_y[low] = rows - near_y[low]
            near_x[low] += columns
            high = near_x >= columns
            near_y[high] = rows - near_y[high]
            near_x[high] -= columns
            suppressed[near_y, near_x] = True
            votes.append(vote)
            peak_y.append(y)
            peak_x.append(x)
    found, found_y, found_x = np.array(votes), np.array(peak_y, dtype=int), np.array(peak_x, dtype=int)
    if num_peaks < len(found):
        best = np.argsort(found)[::-1][: int(num_peaks)]
        found, found_y, found_x = found[best], found_y[best], found_x[best]
    if found_x.size == 0:
        return found, np.array([]), np.array([])
    return found, angles[found_x], distances[found_y]


@dataclass(frozen=True)
class SimilarityMatch:
    """How well two images' local features agree on one similarity transform."""

    inliers: int
    matches: int
    turn_degrees: float  # the transform's rotation, reduced to [-45, 45)

    @property
    def inlier_fraction(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def _features(rgb: Image.Image):
    from skimage.feature import ORB

    grey = np.asarray(_scaled_down(rgb.convert("L"), FEATURE_SIDE), dtype=np.float64) / 255.0
    orb = ORB(n_keypoints=FEATURE_KEYPOINTS, fast_threshold=FAST_THRESHOLD, n_scales=FEATURE_SCALES)
    try:
        orb.detect_and_extract(grey)
    except RuntimeError:  # too flat for any keypoint
        return np.empty((0, 2)), np.empty((0, 256), dtype=bool)
    return orb.keypoints, orb.descriptors


def similarity_match(first, second) -> SimilarityMatch:
    """Cross-checked ORB matches between two images (or their `_features`) and the RANSAC inliers
    of one similarity transform (rotation, scale, shift) fitted to them (seeded: the same answer
    every run)."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import SimilarityTransform

    (keys_a, desc_a), (keys_b, desc_b) = (_features(x) if isinstance(x, Image.Image) else x for x in (first, second))
    if len(desc_a) < 3 or len(desc_b) < 3:
        return SimilarityMatch(0, 0, 0.0)
    pairs = match_descriptors(desc_a, desc_b, cross_check=True, max_ratio=0.8)
    if len(pairs) < 4:
        return SimilarityMatch(0, len(pairs), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No inliers found": answered as 0 inliers
        model, inliers = ransac(
            (keys_a[pairs[:, 0]][:, ::-1], keys_b[pairs[:, 1]][:, ::-1]),
            SimilarityTransform,
            min_samples=3,
            residual_threshold=2,
            max_trials=RANSAC_TRIALS,
            rng=0,
        )
    if not model or inliers is None:  # a failed estimation is falsy
        return SimilarityMatch(0, len(pairs), 0.0)
    return SimilarityMatch(int(inliers.sum()), len(pairs), _reduced_degrees(float(np.rad2deg(model.rotation))))


def vouches_for(match: SimilarityMatch, corner_degrees: float) -> bool:
    """Whether a feature match proves a turned copy: enough inliers, within the cutoff, and a
    transform turned by the corners' angle (either direction: which image is the copy is unknown)."""
    disagreement = min(
        abs(_reduced_degrees(match.turn_degrees - corner_degrees)),
        abs(_reduced_degrees(match.turn_degrees + corner_degrees)),
    )
    return (
        match.inliers >= MIN_INLIERS
        and match.inlier_fraction >= INLIER_FRACTION_CUTOFF
        and disagreement <= MAX_ANGLE_DISAGREEMENT_DEGREES
    )


def signal_distance(match: SimilarityMatch, radius: float) -> float:
    """The match on the cosine scale, linear in the outlier share: the cutoff lands on `radius`."""
    return radius * (1.0 - match.inlier_fraction) / (1.0 - INLIER_FRACTION_CUTOFF)


@dataclass(frozen=True)
class RotatedCopySignal:
    """Vouches for turned copies with black corners (module docstring).

    Attributes:
        load: callable(pixel hash, draft_size) -> RGB image of that content; JPEGs may be decoded
            at a reduced scale of at least draft_size (`core.images.load_rgb`).
        turned_degrees: pixel hash -> the angle its black corners show (the catalog's
            `turned_degrees`), for the contents that have turned black corners; no other content
            is decoded to look for them.
    """

    load: Callable[[str, tuple[int, int] | None], Image.Image]
    turned_degrees: Mapping[str, float]

    def _features_or_none(self, pixel_hash):
        # A file that changed or vanished since it was catalogued is left to the next run's
        # catalog; it must not fail the scoring.
        try:
            image = self.load(str(pixel_hash), (FEATURE_SIDE, FEATURE_SIDE))
        except (ImageRejected, OSError):
            return None
        return _features(image)

    def vouched_matches(
        self, pixel_hashes: np.ndarray, embedding: NeighborSearch, group: np.ndarray, radius: float
    ) -> tuple[NeighborSearch, int]:
        """The pairs this signal vouches for, on the cosine scale, and how many turned contents
        were matched against their neighbours.

        Args:
            pixel_hashes: (M,) the contents, in row order.
            embedding: the embedding search over those rows (top-k lists by cosine distance).
            group: (M,) identical-group label per row (copies need no proof).
            radius: the near-duplicate radius on the cosine scale.
        """
        topk_index, topk_distance = embedding.topk_index, embedding.topk_distance
        outside = (topk_index >= 0) & (group[np.maximum(topk_index, 0)] != group[:, None])
        # A turned copy may lie within the radius of another copy and beyond it of its original:
        # every turned content is matched against its nearest contents beyond the radius.
        beyond = outside & (topk_distance > radius) & (topk_distance <= CANDIDATE_MAX_COSINE_DISTANCE)
        turned = pd.Index(pixel_hashes).isin(list(self.turned_degrees))
        candidates = np.flatnonzero(turned & beyond.any(axis=1))
        features: dict[int, tuple | None] = {}

        def features_of(row: int):
            if row not in features:
                features[row] = self._features_or_none(pixel_hashes[row])
            return features[row]

        found: dict[tuple[int, int], float] = {}
        for row in candidates.tolist():
            degrees = self.turned_degrees[str(pixel_hashes[row])]
            if features_of(row) is None:
                continue
            for other in topk_index[row][beyond[row]][:NEIGHBORS_CHECKED]:
                if features_of(int(other)) is None:
                    continue
                match = similarity_match(features_of(row), features_of(int(other)))
                if vouches_for(match, degrees):
                    pair = (min(row, int(other)), max(row, int(other)))
                    found[pair] = min(found.get(pair, np.inf), signal_distance(match, radius))
        return _as_search(len(pixel_hashes), found), len(candidates)


def _as_search(rows: int, pairs: dict[tuple[int, int], float]) -> NeighborSearch:
    """Vouched pairs as a NeighborSearch (each row's matches in its top-k list, nearest first)."""
    per_row: dict[int, list[tuple[float, int]]] = {}
    for (left, right), pair_distance in pairs.items():
        per_row.setdefault(left, []).append((pair_distance, right))
        per_row.setdefault(right, []).append((pair_distance, left))
    width = max((len(v) for v in per_row.values()), default=0)
    index = np.full((rows, width), -1, dtype=np.int64)
    distance = np.full((rows, width), np.inf, dtype=np.float32)
    for row, entries in per_row.items():
        for position, (d, other) in enumerate(sorted(entries)):
            index[row, position], distance[row, position] = other, d
    ordered = sorted(pairs.items())
    return NeighborSearch(
        index,
        distance,
        np.array([p[0][0] for p in ordered], dtype=np.int64),
        np.array([p[0][1] for p in ordered], dtype=np.int64),
        np.array([p[1] for p in ordered], dtype=np.float32),
    )


def vouched_distances_from(search: NeighborSearch, row: int) -> np.ndarray:
    """(M,) float32 cosine-scale distances this signal gives from one row (+inf where none)."""
    out = np.full(len(search.topk_index), np.inf, dtype=np.float32)
    valid = search.topk_index[row] >= 0
    out[search.topk_index[row][valid]] = search.topk_distance[row][valid]
    return out

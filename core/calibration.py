"""Choosing the near-duplicate threshold of one embedding model from the user's own images, without labels.

A sample of distinct images ("originals") is edited in ways that keep the picture (re-compression,
resizing, crops, blur, grayscale, rotations / flips, letterboxing, ...). Each edited copy and its
source is a *positive* pair; each copy (and each original) against the nearest *other* original is
a *negative*. The pipeline's own decision rule is applied to both — a pair is a near-duplicate when
the embedding distance is within T or the rotation/flip-invariant pHash distance is within H bits
(SPEC.md's fused distance) — and T is the largest value at which the estimated pair precision
TP / (TP + FP) still reaches the target.

The known trap: the user's data already holds duplicates, so an original's nearest "other" original
is often a copy of it, and precision looks low at every T. Originals whose pHash already matches
the source's (within H bits) or whose pixels are identical are left out of the negatives.

Every distance here is on the uniqueness scale (half the cosine distance), like the thresholds.
Nothing here imports Dagster.

Over 400 lines: one procedure (sample, edit, embed, pair, choose) whose steps share its data model.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from imgdedup_pipeline.core.atomic_write import write_atomically
from imgdedup_pipeline.core.distances import (
    EDGE_AGREEMENT_BITS,
    confirmed_invariant_hamming,
    cosine_distance,
    to_uniqueness,
)
from imgdedup_pipeline.core.images import (
    informative_phashes,
    perceptual_hashes,
    pixel_hash,
    trim_uniform_borders,
)
from imgdedup_pipeline.core.search.result import l2_normalize

if TYPE_CHECKING:
    from imgdedup_pipeline.core.object_store import ObjectFolder

DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.05  # SPEC.md's default (cosine similarity 0.9), used until calibrated
DEFAULT_TARGET_PRECISION = 0.99
DEFAULT_SAMPLE_SIZE = 100
DEFAULT_SEED = 0
DEFAULT_MAX_SIDE = 512
MIN_ORIGINALS = 4  # below this there is no "nearest other original" worth the name
THRESHOLDS_FILE = "thresholds.json"  # in the output folder's state directory
FILE_FORMAT_VERSION = 1
# What a calibration measures (its edits, its negatives, the pHash rule): a stored calibration made
# under another version is made again rather than reused for the same sample.
CALIBRATION_RULES_VERSION = 2


class CalibrationError(ValueError):
    """The sample cannot give a threshold (too few images, or the target precision is out of reach)."""


# --- edits --------------------------------------------------------------------------------------


def _recompress(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(20, 41)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _downscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = float(rng.uniform(0.15, 0.35))
    return image.resize(
        (max(16, round(image.width * factor)), max(16, round(image.height * factor))), Image.Resampling.BICUBIC
    )


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    keep = float(rng.uniform(0.8, 0.9))  # of each side
    width, height = max(1, round(image.width * keep)), max(1, round(image.height * keep))
    left, top = int(rng.integers(0, image.width - width + 1)), int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, max(image.size) * float(rng.uniform(0.003, 0.006)))))


def _grayscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.convert("L").convert("RGB")


def _contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    brighter = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.85, 1.15)))
    return ImageEnhance.Contrast(brighter).enhance(float(rng.uniform(1.2, 1.4)))


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.transpose(
        (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[int(rng.integers(0, 3))]
    )


def _flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.transpose((Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM)[int(rng.integers(0, 2))])


def _letterbox(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    # Black bars that turn the frame into a 16:9 landscape (or a square, for wide images).
    aspect = 16 / 9 if image.width / image.height < 16 / 9 else 1.0
    width = max(image.width, round(image.height * aspect))
    height = max(image.height, round(width / aspect))
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


def _watermark(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    band = max(8, image.height // 12)
    top = int(rng.integers(0, max(1, image.height - band)))
    draw.rectangle((0, top, image.width, top + band), fill=(255, 255, 255))
    draw.text((band // 2, top + band // 4), "(c) sample watermark", fill=(0, 0, 0))
    return marked


def _small_rotation(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    # Turned by 1-10 degrees either way on its own canvas: black corners, as editors leave them.
    degrees = float(rng.uniform(1.0, 10.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC)


def _off_centre_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    keep = float(rng.uniform(0.75, 0.85))  # of each side, anchored at a random corner
    width, height = max(1, round(image.width * keep)), max(1, round(image.height * keep))
    left = 0 if rng.random() < 0.5 else image.width - width
    top = 0 if rng.random() < 0.5 else image.height - height
    return image.crop((left, top, left + width, top + height))


Edit = Callable[[Image.Image, np.random.Generator], Image.Image]
EDITS: tuple[tuple[str, Edit], ...] = (
    ("recompress", _recompress),
    ("downscale", _downscale),
    ("crop", _crop),
    ("blur", _blur),
    ("grayscale", _grayscale),
    ("contrast", _contrast),
    ("rotate", _rotate),
    ("flip", _flip),
    ("letterbox", _letterbox),
    ("watermark", _watermark),
    ("small rotation", _small_rotation),
    ("off-centre crop", _off_centre_crop),
)
EDIT_NAMES = tuple(name for name, _ in EDITS)


def _halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The two halves across the longer side: no pixel in common (a texture's two crops)."""
    width, height = image.size
    if width >= height:
        return image.crop((0, 0, width // 2, height)), image.crop((width - width // 2, 0, width, height))
    return image.crop((0, 0, width, height // 2)), image.crop((0, height - height // 2, width, height))


def _opposite_quarters(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The top-left and bottom-right quarters: alike under a turn in a point-symmetric picture."""
    width, height = image.size
    return image.crop((0, 0, width // 2, height // 2)), image.crop(
        (width - width // 2, height - height // 2, width, height)
    )


# Pairs of different pictures cut from one original (bench/hard_negatives.py's texture crops and
# opposite crops): the calibration counts them as negatives, so a collection whose pictures hold
# such look-alikes gets a threshold that keeps them apart.
HARD_NEGATIVES: tuple[tuple[str, Callable[[Image.Image], tuple[Image.Image, Image.Image]]], ...] = (
    ("halves", _halves),
    ("opposite quarters", _opposite_quarters),
)


def edited_copies(
    image: Image.Image, seed: int, edits: Sequence[tuple[str, Edit]] = EDITS
) -> list[tuple[str, Image.Image]]:
    """One edited copy of `image` per edit, deterministic for a given seed.

    Args:
        image: RGB image (not modified).
        seed: seeds the edits' random parameters (JPEG quality, crop offset, ...).
        edits: (name, function(image, rng) -> RGB image) pairs.

    Returns:
        A new list of (edit name, RGB image), in the order of `edits`.
    """
    rng = np.random.default_rng(seed)
    return [(name, edit(image, rng).convert("RGB")) for name, edit in edits]


# --- distances ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationPairs:
    """The measured pairs of one calibration sample (uniqueness scale: half the cosine distance).

    Attributes:
        positives: one row per edited copy: source (index in the sample), edit, distance (embedding,
            uniqueness scale), hash_bits (invariant pHash distance to the source; -1 where either
            hash carries no information, `core.images.informative_phashes`: flat images).
        negatives: one row per query (a sampled original, edit '', or a copy): source, edit,
            nearest (population row of the nearest eligible different content, -1 if none),
            distance, hash_bits; "nearest" follows the fused rule (a pHash match first, then the
            smallest embedding distance). Then one row per hard negative: two different pictures
            cut from one original (edit "hard negative: <name>", nearest -1, hash_bits -1: judged by
            the embedding alone), their distance.
        excluded: (sample index, population row) pairs left out of the negatives because the row is
            the source itself or the user's own duplicate of it (identical pixels or a pHash match).
    """

    positives: pd.DataFrame
    negatives: pd.DataFrame
    excluded: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Population:
    """Every distinct content of the dataset, which negatives are searched in.

    Attributes:
        vectors: (M, D) float embeddings from the pipeline (normalised here).
        hashes: (M, V) uint64 invariant pHashes, identity first.
        pixel_hashes: (M,) the contents' pixel hashes.
        edge_hashes: (M, EDGE_HASH_WORDS) uint64 edge hashes (`core.images.edge_hash_of_grid`).
    """

    vectors: np.ndarray
    hashes: np.ndarray
    pixel_hashes: Sequence[str]
    edge_hashes: np.ndarray


def vouching_hamming(
    query: np.ndarray, query_edge, hashes: np.ndarray, edges: np.ndarray, within_bits: int = 64
) -> np.ndarray:
    """The pipeline's pHash distance (`core.distances.confirmed_invariant_hamming`: a turned
    variant counts only where the edge hashes agree; exact up to `within_bits`, the cutoff the
    caller compares with), with -1 where the query's or the other row's hash carries no
    information (a flat image): such a pair gets no say from the hash."""
    query, hashes = np.asarray(query, dtype=np.uint64), np.asarray(hashes, dtype=np.uint64)
    bits = confirmed_invariant_hamming(
        query[None, :], hashes, np.asarray(query_edge)[None, :], edges, EDGE_AGREEMENT_BITS, within_bits
    )
    informative = informative_phashes(hashes) & informative_phashes(query)
    return np.where(informative, bits, -1)


def measure_calibration_pairs(
    originals: Sequence[Image.Image],
    embed: Callable[[list[Image.Image]], np.ndarray],
    hash_threshold_bits: int,
    seed: int = DEFAULT_SEED,
    edits: Sequence[tuple[str, Edit]] = EDITS,
    hashes: Callable[[Image.Image], tuple[np.ndarray, np.ndarray]] = perceptual_hashes,
    batch_size: int = 32,
    max_side: int | None = DEFAULT_MAX_SIDE,
    population: Population | None = None,
    original_pixel_hashes: Sequence[str] | None = None,
    hard_negatives: Sequence[tuple[str, Callable[[Image.Image], tuple[Image.Image, Image.Image]]]] = HARD_NEGATIVES,
) -> CalibrationPairs:
    """Edit every original, embed and hash everything the way the pipeline does, and measure pairs.

    Negatives are searched in `population` (all of the dataset's contents): how close the nearest
    different image lies depends on how many images there are, so a sample's own originals alone
    would make the negatives look far too far in a large, dense set.

    Args:
        originals: distinct RGB images (the sample); not modified.
        embed: list of RGB images -> (N, D) float32 rows (normalised here). Images are trimmed of
            uniform borders first, as the pipeline does; the hash function trims on its own.
        hash_threshold_bits: H of the fused rule (0 = the hash signal is off: nothing is excluded by
            hash and no pair is matched by it).
        seed: base seed of the edits (original i uses seed + i).
        edits: the edits to apply.
        hashes: RGB image -> ((V,) uint64 invariant pHashes, identity first; its edge hash words).
        batch_size: images per `embed` call.
        max_side: originals larger than this are first shrunk to it (aspect kept): editing,
            hashing and embedding full-size photos costs time and changes nothing the model
            (a 224-px input) or the 32-px pHash grid can see. None keeps the full size.
        population: the dataset's contents; None = the sampled originals themselves.
        original_pixel_hashes: the originals' pixel hashes as in the catalog (to find them in the
            population); default computed from the images.
        hard_negatives: ways to cut two different pictures from each original; each pair is one
            more negative (edit "hard negative: <name>", nearest -1), by its embedding distance.

    Returns:
        CalibrationPairs (new DataFrames).

    Raises:
        CalibrationError: fewer than MIN_ORIGINALS originals.
    """
    count = len(originals)
    if count < MIN_ORIGINALS:
        raise CalibrationError(
            f"calibration needs at least {MIN_ORIGINALS} distinct images, got {count}; point it at a folder with more images"
        )
    if original_pixel_hashes is None:
        original_pixel_hashes = [pixel_hash(image) for image in originals]
    images, source, edit_name = [], [], []
    hard_pairs: list[tuple[int, str, Image.Image, Image.Image]] = []
    for index, original in enumerate(originals):
        if max_side is not None and max(original.size) > max_side:
            scale = max_side / max(original.size)
            original = original.resize(
                (max(1, round(original.width * scale)), max(1, round(original.height * scale))),
                Image.Resampling.BICUBIC,
            )
        images.append(original)
        source.append(index)
        edit_name.append("")
        for name, copy in edited_copies(original, seed + index, edits):
            images.append(copy)
            source.append(index)
            edit_name.append(name)
        for name, cut in hard_negatives:
            first, second = cut(original)
            if pixel_hash(first) != pixel_hash(second):  # a flat picture's halves are one image
                hard_pairs.append((index, name, first, second))
    is_original = np.array([name == "" for name in edit_name])

    def embedded(pictures: list[Image.Image]) -> np.ndarray:
        """L2-normalised rows, the pictures trimmed of uniform borders first, as the pipeline does."""
        trimmed = [trim_uniform_borders(picture) for picture in pictures]
        batches = [embed(trimmed[start : start + batch_size]) for start in range(0, len(trimmed), batch_size)]
        return l2_normalize(np.concatenate([np.asarray(batch, np.float32) for batch in batches]))

    vectors = embedded(images)
    phashes, edges = zip(*(hashes(image) for image in images), strict=True)
    phashes = np.stack([np.asarray(p, dtype=np.uint64) for p in phashes])
    edges = np.stack([np.asarray(e, dtype=np.uint64) for e in edges])
    original_rows = np.nonzero(is_original)[0]
    if population is None:
        population = Population(
            vectors[original_rows], phashes[original_rows], list(original_pixel_hashes), edges[original_rows]
        )
    pop_vectors = l2_normalize(population.vectors)
    pop_hashes = np.asarray(population.hashes, dtype=np.uint64)
    pop_edges = np.asarray(population.edge_hashes, dtype=np.uint64)
    pop_pixels = np.asarray(population.pixel_hashes, dtype=object)

    # Which population rows are the source itself or the user's own duplicate of it (the trap).
    same_content = []
    for index, original_row in enumerate(original_rows):
        same = pop_pixels == original_pixel_hashes[index]
        same |= cosine_distance(pop_vectors @ vectors[original_row]) < 1e-5
        if hash_threshold_bits > 0:
            bits = vouching_hamming(
                phashes[original_row], edges[original_row], pop_hashes, pop_edges, hash_threshold_bits
            )
            same |= (bits >= 0) & (bits <= hash_threshold_bits)
        same_content.append(same)
    excluded = [
        (i, int(j))
        for i, same in enumerate(same_content)
        for j in np.nonzero(same)[0]
        if pop_pixels[j] != original_pixel_hashes[i]
    ]

    positive_rows, negative_rows = [], []
    for row in range(len(images)):
        src = int(source[row])
        if not is_original[row]:
            origin = original_rows[src]
            positive_rows.append(
                {
                    "source": src,
                    "edit": edit_name[row],
                    "distance": float(to_uniqueness(cosine_distance(vectors[origin] @ vectors[row]))),
                    "hash_bits": int(
                        vouching_hamming(
                            phashes[row], edges[row], phashes[origin : origin + 1], edges[origin : origin + 1]
                        )[0]
                    ),
                }
            )
        eligible = ~same_content[src]
        if not eligible.any():
            negative_rows.append(
                {"source": src, "edit": edit_name[row], "nearest": -1, "distance": np.inf, "hash_bits": -1}
            )
            continue
        distance = to_uniqueness(cosine_distance(pop_vectors @ vectors[row]))
        bits = vouching_hamming(phashes[row], edges[row], pop_hashes, pop_edges, hash_threshold_bits)
        matched = (
            eligible & (bits >= 0) & (bits <= hash_threshold_bits)
            if hash_threshold_bits > 0
            else np.zeros(len(eligible), dtype=bool)
        )
        candidates = np.nonzero(matched if matched.any() else eligible)[0]
        nearest = int(candidates[np.argmin(distance[candidates])])
        negative_rows.append(
            {
                "source": src,
                "edit": edit_name[row],
                "nearest": nearest,
                "distance": float(distance[nearest]),
                "hash_bits": int(bits[nearest]),
            }
        )
    if hard_pairs:
        # Judged by the embedding alone (hash_bits -1): the threshold sets only the embedding's
        # radius, and the halves of a mirror-symmetric picture are the pHash's flipped copies of
        # each other, which no threshold could keep apart.
        cut_vectors = embedded([image for _, _, first, second in hard_pairs for image in (first, second)])
        for pair, (index, name, _, _) in enumerate(hard_pairs):
            one, other = cut_vectors[2 * pair], cut_vectors[2 * pair + 1]
            negative_rows.append(
                {
                    "source": index,
                    "edit": f"hard negative: {name}",
                    "nearest": -1,
                    "distance": float(to_uniqueness(cosine_distance(one @ other))),
                    "hash_bits": -1,
                }
            )
    return CalibrationPairs(pd.DataFrame(positive_rows), pd.DataFrame(negative_rows), excluded)


# --- selection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what the sample says about it.

    Attributes:
        threshold: near-duplicate threshold T on the uniqueness scale.
        target_precision: the precision asked for.
        precision, recall: estimated at T on the sample (pair precision, recall of the edits).
        largest_safe_distance: the largest positive distance at which precision still reaches the
            target (T, unless capped).
        next_negative_distance: the smallest negative distance above it (inf if none): the margin.
        positives, negatives: pair counts used.
        hash_matched_positives / hash_matched_negatives: pairs the pHash alone decides.
    """

    threshold: float
    target_precision: float
    precision: float
    recall: float
    largest_safe_distance: float
    next_negative_distance: float
    positives: int
    negatives: int
    hash_matched_positives: int
    hash_matched_negatives: int


def decided_distances(pairs: pd.DataFrame, hash_threshold_bits: int) -> np.ndarray:
    """Each pair's distance under the fused rule: 0 when the pHash alone matches it (at any T),
    otherwise its embedding distance (uniqueness scale). (N,) float64."""
    distance = pairs["distance"].to_numpy(np.float64) if len(pairs) else np.empty(0)
    if hash_threshold_bits <= 0 or not len(pairs):
        return distance
    bits = pairs["hash_bits"].to_numpy(np.int64)
    return np.where((bits >= 0) & (bits <= hash_threshold_bits), 0.0, distance)


def _hash_matched(pairs: pd.DataFrame, hash_threshold_bits: int) -> int:
    if hash_threshold_bits <= 0 or not len(pairs):
        return 0
    bits = pairs["hash_bits"].to_numpy(np.int64)
    return int(np.count_nonzero((bits >= 0) & (bits <= hash_threshold_bits)))


def precision_recall_at(threshold: float, positive: np.ndarray, negative: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of the rule `distance <= threshold` on decided distances; precision is
    1.0 when nothing is predicted."""
    true_pos = int(np.count_nonzero(positive <= threshold))
    false_pos = int(np.count_nonzero(negative <= threshold))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    return precision, true_pos / len(positive) if len(positive) else 0.0


def choose_threshold(
    pairs: CalibrationPairs,
    hash_threshold_bits: int,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    min_threshold: float = 1e-4,
    max_threshold: float = 0.5,
) -> ThresholdChoice:
    """Pick T: the largest embedding threshold whose estimated pair precision reaches the target.

    Candidates are the positives' decided distances. T is the largest candidate whose precision
    (TP / (TP + FP), every positive and negative counted at its decided distance) reaches
    `target_precision`, capped at `max_threshold`. T is not moved into the gap towards the next
    negative: past the last copy the sample has no evidence of recall, and the gap is mostly
    sampling sparsity (a nearest neighbour among n sampled images lies farther than among the N
    images of the whole set), so a wider T would only add false pairs on the full data.

    Args:
        pairs: the measured pairs.
        hash_threshold_bits: H of the fused rule (0 = embedding only).
        target_precision: in (0, 1].
        min_threshold: T never goes below this (the duplicate threshold: T must lie above it).
        max_threshold: T never goes above this.

    Returns:
        ThresholdChoice.

    Raises:
        CalibrationError: no positives, or even the smallest candidate misses the target.
    """
    if not 0.0 < target_precision <= 1.0:
        raise CalibrationError(f"target precision must be in (0, 1], got {target_precision}")
    positive = decided_distances(pairs.positives, hash_threshold_bits)
    negative = decided_distances(pairs.negatives, hash_threshold_bits)
    if not len(positive):
        raise CalibrationError("no edited copies were measured; calibration needs a sample of decodable images")
    candidates = np.unique(positive[positive <= max_threshold])
    safe = [c for c in candidates if precision_recall_at(c, positive, negative)[0] >= target_precision]
    if not safe:
        precision, _ = precision_recall_at(float(candidates[0]) if len(candidates) else 0.0, positive, negative)
        raise CalibrationError(
            f"no threshold reaches precision {target_precision} on this sample (best {precision:.3f} at the smallest copy distance): "
            "the sample's originals are closer to each other than edited copies to their sources. Use a larger or more varied "
            "sample, lower --target-precision, or pin the threshold (--near-duplicate-threshold)"
        )
    largest_safe = float(max(safe))
    above = negative[negative > largest_safe]
    next_negative = float(above.min()) if len(above) else np.inf
    threshold = float(np.clip(largest_safe, np.nextafter(min_threshold, 1.0), max_threshold))
    precision, recall = precision_recall_at(threshold, positive, negative)
    return ThresholdChoice(
        threshold=threshold,
        target_precision=target_precision,
        precision=precision,
        recall=recall,
        largest_safe_distance=largest_safe,
        next_negative_distance=next_negative,
        positives=len(positive),
        negatives=len(negative),
        hash_matched_positives=_hash_matched(pairs.positives, hash_threshold_bits),
        hash_matched_negatives=_hash_matched(pairs.negatives, hash_threshold_bits),
    )


def sample_rows(table: pd.DataFrame, sample_size: int, seed: int, key: str = "pixel_hash") -> pd.DataFrame:
    """A deterministic sample of distinct contents: one row per `key` (first by path), then
    `sample_size` of them drawn with `seed`, independent of the table's row order.

    Returns:
        A new DataFrame sorted by `key`.
    """
    if sample_size <= 0:
        raise CalibrationError(f"sample size must be positive, got {sample_size}")
    distinct = (
        table.sort_values(["path", key] if "path" in table else [key])
        .drop_duplicates(key)
        .sort_values(key, ignore_index=True)
    )
    if len(distinct) <= sample_size:
        return distinct
    chosen = np.sort(np.random.default_rng(seed).choice(len(distinct), size=sample_size, replace=False))
    return distinct.iloc[chosen].reset_index(drop=True)


# --- storage ------------------------------------------------------------------------------------


def calibration_record(
    choice: ThresholdChoice,
    pairs: CalibrationPairs,
    sample_size: int,
    seed: int,
    hash_threshold_bits: int,
    image_root: str,
) -> dict:
    """What is stored per model id: the threshold, how it was obtained, and when."""
    per_edit = (
        pairs.positives.assign(decided=decided_distances(pairs.positives, hash_threshold_bits))
        .groupby("edit")["decided"]
        .apply(lambda d: float(np.mean(d <= choice.threshold)))
        .round(4)
        .to_dict()
    )
    return {
        "near_duplicate_threshold": round(choice.threshold, 6),
        **{
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(choice).items()
            if k != "threshold"
        },
        "recall_per_edit": per_edit,
        "rules_version": CALIBRATION_RULES_VERSION,
        "sample_size": sample_size,
        "seed": seed,
        "hash_threshold_bits": hash_threshold_bits,
        "excluded_own_duplicates": len(pairs.excluded),
        "image_root": image_root,
        "calibrated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def read_calibrations(path: str | os.PathLike) -> dict[str, dict]:
    """model id -> stored record, from a thresholds file ({} when there is none).

    Raises:
        ValueError: the file exists but is not a thresholds file (says which file to fix or delete).
    """
    text = _read_text(path)
    if text is None:
        return {}
    try:
        payload = json.loads(text)
        models = payload["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a thresholds file ({type(exc).__name__}: {exc}); delete it and recalibrate"
        ) from exc
    return models


def write_calibration(path: str | os.PathLike, model_id: str, record: dict) -> dict[str, dict]:
    """Store `record` for `model_id` in the thresholds file, keeping other models' records; the
    file is replaced atomically. Returns the new model id -> record mapping."""
    models = {**read_calibrations(path), model_id: record}
    text = json.dumps({"version": FILE_FORMAT_VERSION, "models": models}, indent=2, sort_keys=True)
    if str(path).startswith("s3://"):  # the shared storage (Settings.thresholds_file): one PUT, atomic too
        folder, name = _object_location(str(path))
        folder.put(name, text.encode())
    else:
        write_atomically(path, lambda temporary: Path(temporary).write_text(text))
    return models


def _read_text(path: str | os.PathLike) -> str | None:
    """The thresholds file's text (a local path or an s3:// URI), None when there is none."""
    if str(path).startswith("s3://"):
        folder, name = _object_location(str(path))
        data = folder.get(name)
        return data.decode() if data is not None else None
    return Path(path).read_text() if Path(path).exists() else None


def _object_location(uri: str) -> tuple[ObjectFolder, str]:
    """The folder of an s3:// URI and the object's name in it."""
    from imgdedup_pipeline.core.object_store import folder_at

    parent, _, name = uri.rpartition("/")
    return folder_at(parent), name


def calibrated_threshold(path: str | os.PathLike, model_id: str | None) -> tuple[float, dict] | None:
    """(threshold, record) stored for `model_id`, or None when that model was never calibrated."""
    if model_id is None:
        return None
    record = read_calibrations(path).get(model_id)
    if record is None:
        return None
    return float(record["near_duplicate_threshold"]), record


# --- one calibration, end to end ----------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationOutcome:
    """A finished calibration: the choice, the measured pairs and the record to store."""

    choice: ThresholdChoice
    pairs: CalibrationPairs
    record: dict


def sample_digest(pixel_hashes: Sequence[str]) -> str:
    """Identifies a sample by its contents (order-independent), so an unchanged sample is not recalibrated."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(pixel_hashes)).encode()).hexdigest()[:16]


def calibrate_threshold(
    originals: Sequence[Image.Image],
    embed: Callable[[list[Image.Image]], np.ndarray],
    hash_threshold_bits: int,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    seed: int = DEFAULT_SEED,
    min_threshold: float = 1e-4,
    image_root: str = "",
    pixel_hashes: Sequence[str] | None = None,
    batch_size: int = 32,
    population: Population | None = None,
) -> CalibrationOutcome:
    """Measure edited copies of `originals` and choose the near-duplicate threshold.

    Args:
        originals: the sample, distinct RGB images (see `sample_rows`).
        embed: the model: list of RGB images -> (N, D) float32.
        hash_threshold_bits: H of the fused rule the pipeline uses (0 = embedding only).
        target_precision: estimated pair precision to reach.
        seed: seeds the edits.
        min_threshold: the duplicate threshold; T stays above it.
        image_root: recorded with the result.
        pixel_hashes: the originals' pixel hashes as in the catalog (default: computed).
        batch_size: images per forward pass.
        population: the dataset's contents the negatives are searched in (default: the sample).

    Returns:
        CalibrationOutcome whose `record` is what `write_calibration` stores.

    Raises:
        CalibrationError: too few images, or the target precision cannot be reached.
    """
    pairs = measure_calibration_pairs(
        originals,
        embed,
        hash_threshold_bits,
        seed=seed,
        batch_size=batch_size,
        population=population,
        original_pixel_hashes=pixel_hashes,
    )
    choice = choose_threshold(pairs, hash_threshold_bits, target_precision, min_threshold=min_threshold)
    record = calibration_record(choice, pairs, len(originals), seed, hash_threshold_bits, image_root)
    record["population_size"] = len(population.pixel_hashes) if population is not None else len(originals)
    return CalibrationOutcome(choice, pairs, record)

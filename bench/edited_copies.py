"""A seedable set of the edits issue 16 lists as still missed, cut from scikit-image's sample photos
(public images shipped with the package), so that `bench/quality.py` reports their recall by
relation beside the shared sets.

Usage:
    .venv/bin/python bench/edited_copies.py OUT [--seed 0]

Writes OUT/<picture>/*.jpg (JPEG quality 90, as such copies usually travel), OUT/groups.json and
OUT/manifest.csv in the format of the shared sets. Each picture is one ground-truth group: the
original and one copy per relation below (angles, crop positions and overlay places drawn from the
seed). Different pictures are different groups, so a pair across pictures is a false one.

Relations (`relation` column, reduced to a category by `bench/quality.py`):
- `small rotation, black corners`: turned by 1-10° (either way) on its own canvas;
- `small rotation, inner crop`: turned by 1-10° and cropped to the largest centred rectangle of the
  original's aspect that holds no corner, then scaled back to the original's size;
- `arbitrary rotation, black corners`: turned by 20-45° on its own canvas;
- `off-centre crop`: 75-85 % of each side, anchored at a random corner;
- `text overlay`: a caption band covering 5-10 % of the image, at a random height.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generated_sets import generator_main, manifest_row, write_ground_truth  # noqa: E402
from bench.hard_negatives import fit, photo  # noqa: E402

# Distinct pictures only: skimage.data.cat() is chelsea again.
PICTURES = ("astronaut", "rocket", "coffee", "chelsea", "camera", "immunohistochemistry")
SIDE = 448  # longer side of every original
RELATIONS = (
    "small rotation, black corners",
    "small rotation, inner crop",
    "arbitrary rotation, black corners",
    "off-centre crop",
    "text overlay",
)


def _signed(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high) * rng.choice([-1.0, 1.0]))


def inner_crop(image: Image.Image, degrees: float) -> Image.Image:
    """Turned by `degrees` and cropped to the largest centred rectangle of the original's aspect
    inside the turned frame, scaled back to the original's size."""
    w, h = image.size
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    scale = min(w / (w * c + h * s), h / (w * s + h * c))
    cw, ch = w * scale, h * scale
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC).crop(box).resize((w, h), Image.Resampling.LANCZOS)


def off_centre_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    keep = rng.uniform(0.75, 0.85)
    w, h = image.size
    cw, ch = round(w * keep), round(h * keep)
    left, top = (0 if rng.random() < 0.5 else w - cw), (0 if rng.random() < 0.5 else h - ch)
    return image.crop((left, top, left + cw, top + ch))


def text_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    covered = rng.uniform(0.05, 0.10)
    band = max(8, round(image.height * covered))
    top = int(rng.integers(0, image.height - band))
    copy = image.copy()
    draw = ImageDraw.Draw(copy)
    draw.rectangle((0, top, image.width, top + band), fill=(20, 20, 20))
    draw.text((8, top + band // 4), "© imgdedup sample caption", fill=(255, 255, 255), font_size=max(8, band // 2))
    return copy


def edited_copies(rng: np.random.Generator, original: Image.Image):
    small = _signed(rng, 1.0, 10.0)
    yield (
        "small-rotation-black-corners",
        original.rotate(small, resample=Image.Resampling.BICUBIC),
        f"small rotation, black corners: {small:.1f} deg",
    )
    cropped = _signed(rng, 1.0, 10.0)
    yield "small-rotation-inner-crop", inner_crop(original, cropped), f"small rotation, inner crop: {cropped:.1f} deg"
    large = _signed(rng, 20.0, 45.0)
    yield (
        "arbitrary-rotation-black-corners",
        original.rotate(large, resample=Image.Resampling.BICUBIC),
        f"arbitrary rotation, black corners: {large:.1f} deg",
    )
    yield "off-centre-crop", off_centre_crop(original, rng), "off-centre crop, 75-85 % of each side"
    yield "text-overlay", text_overlay(original, rng), "text overlay, 5-10 % of the image"


def write_edited_copies(out: Path, seed: int = 0) -> dict[str, int]:
    """Write the set into `out` (created; existing files of the same names are replaced).

    Returns:
        images written per picture.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    groups, rows, counts = {}, [], {}
    for name in PICTURES:
        (out / name).mkdir(parents=True, exist_ok=True)
        original = fit(photo(name), SIDE)
        members = [("original", original, "original scikit-image photo")] + list(edited_copies(rng, original))
        groups[name] = []
        for label, image, relation in members:
            path = f"{name}/{label}.jpg"
            image.save(out / path, quality=90)
            groups[name].append(path)
            rows.append(manifest_row(out, path, image, name, relation, "JPEG"))
        counts[name] = len(members)
    write_ground_truth(out, groups, rows)
    return counts


if __name__ == "__main__":
    sys.exit(generator_main(__doc__, write_edited_copies))

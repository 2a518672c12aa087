"""A seedable set of hard negatives: different pictures that a perceptual hash or an embedding can
mistake for near-duplicates, cut from scikit-image's bundled sample photos (public images shipped
with the package; see `skimage.data`).

Usage:
    .venv/bin/python bench/hard_negatives.py OUT [--seed 0]

Writes OUT/<category>/*.png, and OUT/groups.json and OUT/manifest.csv in the format of the shared
sets (`../shared/bench/data/*`), so `../shared/bench/evaluate.py` and `bench/quality.py` score it.
Every image is its own ground-truth group: any predicted pair is a false one. The same seed gives
the same files (crop positions, sizes and colours are drawn from it).

Categories (`category` column of manifest.csv):
- `opposite crops`: opposite quarters of roughly point-symmetric pictures (a fundus photo, a colour
  wheel, a tray of coins ...): one quarter turned 180° resembles the other, which a
  rotation-invariant hash can take for a rotated copy.
- `texture crops`: non-overlapping crops of tileable textures (brick, grass, gravel, a star
  field): alike in every statistic an embedding sees, but different pixels.
- `mirror halves`: the left and right halves of one picture (a portrait, a rocket on its pad, a cup
  seen from above ...): one half mirrored can resemble the other, which a flip-invariant hash can
  take for a flipped copy.
- `flat colours`: solid images of different colours and sizes (their pHash is empty).
- `same scene, separate shot`: the two views of scikit-image's stereo pair (the only separate shots
  it ships offline). Kept as their own category and, here, *not* duplicates: a second shot of a scene holds
  a viewpoint or moment the first lacks, and de-duplication removes copies and edits of one
  picture, not a scene's other photographs (threatexchange-pdq's ground truth groups such shots;
  the pipeline does not pair them there, 0 of 6, on purpose).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generated_sets import generator_main, manifest_row, write_ground_truth  # noqa: E402

CATEGORY_OPPOSITE = "opposite crops"
CATEGORY_TEXTURE = "texture crops"
CATEGORY_MIRROR = "mirror halves"
CATEGORY_FLAT = "flat colours"
CATEGORY_SAME_SCENE = "same scene, separate shot"
CATEGORIES = (CATEGORY_OPPOSITE, CATEGORY_TEXTURE, CATEGORY_MIRROR, CATEGORY_FLAT, CATEGORY_SAME_SCENE)

# A picture serves one category only: crops of one picture in two categories could overlap.
POINT_SYMMETRIC = ("retina", "colorwheel", "coins", "moon", "immunohistochemistry")
TEXTURES = ("brick", "grass", "gravel", "hubble_deep_field")
MIRROR_SYMMETRIC = ("astronaut", "rocket", "coffee", "camera", "chelsea", "horse")
FLAT_COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "navy": (0, 0, 128),
}
SIDE = 224  # pixels on the longer side of every written image (the embedders' input size)
TEXTURE_CROPS = 4


def photo(name: str) -> Image.Image:
    """One of scikit-image's sample photos as RGB (alpha composited over white)."""
    from skimage import data

    array = getattr(data, name)()
    image = Image.fromarray(array)
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def fit(image: Image.Image, side: int = SIDE) -> Image.Image:
    scale = side / max(image.size)
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )


def jittered_box(
    rng: np.random.Generator,
    left: float,
    top: float,
    width: float,
    height: float,
    size: tuple[int, int],
    jitter: float = 0.04,
) -> tuple[int, int, int, int]:
    """A box given in fractions of `size`, moved by up to `jitter` of each side (kept inside)."""
    w, h = size
    dx, dy = rng.uniform(-jitter, jitter, 2)
    x0 = min(max(0.0, left + dx), 1.0 - width) * w
    y0 = min(max(0.0, top + dy), 1.0 - height) * h
    return round(x0), round(y0), round(x0 + width * w), round(y0 + height * h)


def opposite_crops(rng: np.random.Generator):
    """Per picture: top-left vs bottom-right and top-right vs bottom-left quarters (a bit more
    than a quarter each, so that the crops do not share an edge)."""
    for name in POINT_SYMMETRIC:
        image = photo(name)
        for label, (left, top) in {
            "top-left": (0.02, 0.02),
            "bottom-right": (0.53, 0.53),
            "top-right": (0.53, 0.02),
            "bottom-left": (0.02, 0.53),
        }.items():
            yield (
                f"{name}-{label}",
                fit(image.crop(jittered_box(rng, left, top, 0.45, 0.45, image.size, 0.02))),
                f"{name}: {label} quarter",
            )


def texture_crops(rng: np.random.Generator):
    """Per texture: TEXTURE_CROPS non-overlapping crops, one per cell of a 2 x 2 grid."""
    for name in TEXTURES:
        image = photo(name)
        for cell in range(TEXTURE_CROPS):
            row, column = divmod(cell, 2)
            box = jittered_box(rng, 0.05 + 0.5 * column, 0.05 + 0.5 * row, 0.4, 0.4, image.size, 0.04)
            yield f"{name}-crop{cell}", fit(image.crop(box)), f"{name}: crop {cell} of {TEXTURE_CROPS}, no overlap"


def mirror_halves(rng: np.random.Generator):
    for name in MIRROR_SYMMETRIC:
        image = photo(name)
        for label, left in {"left": 0.02, "right": 0.53}.items():
            yield (
                f"{name}-{label}-half",
                fit(image.crop(jittered_box(rng, left, 0.05, 0.45, 0.9, image.size, 0.02))),
                f"{name}: {label} half",
            )


def flat_colours(rng: np.random.Generator):
    for name, colour in FLAT_COLOURS.items():
        width, height = (int(v) for v in rng.integers(32, SIDE + 1, 2))
        yield f"solid-{name}", Image.new("RGB", (width, height), colour), f"solid {name} {width}x{height}"


def same_scene_shots(rng: np.random.Generator):
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    yield "motorcycle-left-camera", fit(Image.fromarray(left)), "stereo pair: left camera"
    yield "motorcycle-right-camera", fit(Image.fromarray(right)), "stereo pair: right camera"


GENERATORS = {
    CATEGORY_OPPOSITE: opposite_crops,
    CATEGORY_TEXTURE: texture_crops,
    CATEGORY_MIRROR: mirror_halves,
    CATEGORY_FLAT: flat_colours,
    CATEGORY_SAME_SCENE: same_scene_shots,
}


def write_hard_negatives(out: Path, seed: int = 0) -> dict[str, int]:
    """Write the set into `out` (created; existing files of the same names are replaced).

    Returns:
        images written per category.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    groups, rows, counts = {}, [], {}
    for category, generate in GENERATORS.items():
        folder = category.replace(",", "").replace(" ", "-")
        (out / folder).mkdir(parents=True, exist_ok=True)
        counts[category] = 0
        for name, image, relation in generate(rng):
            path = f"{folder}/{name}.png"
            image.save(out / path)
            groups[name] = [path]
            rows.append(manifest_row(out, path, image, name, relation, "PNG", category=category))
            counts[category] += 1
    write_ground_truth(out, groups, rows)
    return counts


if __name__ == "__main__":
    sys.exit(generator_main(__doc__, write_hard_negatives))

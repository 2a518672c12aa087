"""Images for tests, written into the test's own temporary folder (never the working directory):
scikit-image's bundled photos (so that the offline model's distances mean something), distinct
tiles cut from them, and tiny random-noise PNGs for tests of file handling.

Importable from every test module: `tests/` is on `sys.path` through its conftest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# scikit-image's colour sample photos, in the order tiles are cut from them.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "retina",
)
TILE_GRID = 3  # 3 x 3 tiles per photo
TILE_SIDE = 64


def sample_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled sample photos ('chelsea', 'coffee', ...) as RGB."""
    from skimage import data

    return Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")


def write_noise_png(path: Path, seed: int = 0, size: tuple[int, int] = (6, 4)) -> Path:
    """A PNG of uniform RGB noise, `size` = (width, height); the parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_photo_tiles(folder: Path, count: int) -> list[Path]:
    """`count` distinct RGB tiles (TILE_SIDE px PNGs, `<photo>/<row><column>.png`) cut from PHOTOS."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        photo = np.asarray(sample_photo(name))
        height, width = photo.shape[0] // TILE_GRID, photo.shape[1] // TILE_GRID
        for row in range(TILE_GRID):
            for column in range(TILE_GRID):
                if len(written) == count:
                    return written
                tile = photo[row * height : (row + 1) * height, column * width : (column + 1) * width]
                path = folder / name / f"{row}{column}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(tile).resize((TILE_SIDE, TILE_SIDE), Image.Resampling.LANCZOS).save(path)
                written.append(path)
    if len(written) < count:
        raise ValueError(f"only {len(written)} tiles available, {count} requested")
    return written

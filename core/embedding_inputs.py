"""The embedding step's input, decoded by the catalog from the bytes it has just read and hashed
(issue 14 item 2), so that a first run reads each new file once.

The catalog holds each file's bytes in memory to hash them and decode the pixel hash; decoding a
JPEG once more from those same bytes at the embedding draft size (DCT scaling: a fraction of the
full decode) gives exactly the image the embedding step would get by reading the file again,
checking its SHA-256 and decoding it: the vectors do not change. Entries are keyed by the file's
SHA-256, so an entry is only ever the decode of the bytes that were hashed, whichever path they
were read from.

The cache is disposable (`OUT/state/embedding-inputs`): the catalog empties it before it fills it,
the embedding step empties it when it is done, an entry that cannot be read is decoded from the
file as before, and it is bounded (`budget_bytes`): past the budget, files are decoded again in
the embedding step, as without it.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from core.atomic_write import write_atomically
from core.images import FileBytes, load_rgb, open_image

# The draft side both model families ask for (EfficientNet-Lite0 and ViT at 224): an embedder with
# another input size decodes from the file, as without the cache.
DRAFT_SIDE = 224
# A JPEG drafted for 224 px is at most ~447 px on a side (~0.6 MB of RGB); 1 GiB holds a few
# thousand new contents, enough for the arrivals of most runs, and a first run past it decodes the
# rest in the embedding step.
DEFAULT_BUDGET_BYTES = 1 << 30
DIRECTORY_NAME = "embedding-inputs"


class EmbeddingInputCache:
    """Draft-decoded RGB arrays keyed by file SHA-256, written by the catalog, read by the
    embedding step. Thread-safe for the catalog's decoding threads."""

    def __init__(self, directory: str | os.PathLike, side: int = DRAFT_SIDE, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.directory = Path(directory)
        self.side = side
        self.budget_bytes = budget_bytes
        self._used = 0
        self._lock = threading.Lock()

    def _path(self, file_sha256: str) -> Path:
        return self.directory / f"{file_sha256}-{self.side}.npy"

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with self._lock:
            self._used = 0

    def put_decoded(self, path: str | os.PathLike, data: bytes, file_sha256: str, max_pixels: int) -> bool:
        """Decode `data` (the bytes whose SHA-256 is `file_sha256`) as the embedding step would
        and store it; only JPEGs (the only format with a reduced decode: for the others the
        embedding step's full decode is what it was before). False when not stored."""
        with open_image(FileBytes(path, data), max_pixels) as probe:
            if probe.format != "JPEG":
                return False
        rgb = load_rgb(FileBytes(path, data), max_pixels, (self.side, self.side))
        size = rgb.width * rgb.height * 3
        with self._lock:
            if self._used + size > self.budget_bytes:
                return False
            self._used += size
        array = np.asarray(rgb)
        write_atomically(self._path(file_sha256), lambda temporary: _save(temporary, array))
        return True

    def get(self, file_sha256: str, draft_size) -> Image.Image | None:
        """The stored decode of the bytes with this SHA-256 at `draft_size`, or None (absent,
        another draft size, unreadable: the caller decodes the file)."""
        if tuple(draft_size or ()) != (self.side, self.side):
            return None
        try:
            array = np.load(self._path(file_sha256), allow_pickle=False)
        except Exception:  # noqa: BLE001 (absent, truncated, garbage: decode from the file instead)
            return None
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            return None
        return Image.fromarray(array)


def _save(temporary: str, array: np.ndarray) -> None:
    with open(temporary, "wb") as handle:
        np.save(handle, array, allow_pickle=False)

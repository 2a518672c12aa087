"""The folder of raw images: discovery, decoding and the human review file."""

from pathlib import Path

import dagster as dg
from PIL import Image

from imgdedup_pipeline.core.images import DiscoveredFile, discover_image_files, load_rgb, load_verified_rgb
from imgdedup_pipeline.core.overrides import find_review_file, read_review_file
from imgdedup_pipeline.core.settings import setting


class ImageStoreResource(dg.ConfigurableResource):
    """Read-only access to the image root.

    Attributes:
        image_root, max_pixels: see `core.settings.Settings`.
        decode_workers: threads used to decode and hash files.
        excluded_folders: folders under the root that are not walked (the output folder).
    """

    image_root: str = setting("image_root", default=...)
    max_pixels: int = setting("max_pixels")
    decode_workers: int = 4
    excluded_folders: list[str] = []

    @property
    def root(self) -> Path:
        return Path(self.image_root)

    def discover(self, excluded_folders: list[str] | None = None) -> list[DiscoveredFile]:
        """Every file with an image extension under the root, except under `excluded_folders`
        (added to the configured ones)."""
        return discover_image_files(self.root, [*self.excluded_folders, *(excluded_folders or [])])

    def resolve(self, relative_path: str) -> Path:
        """Absolute path of a file under the root; refuses any path that leaves the root.

        Raises:
            ValueError: the path resolves outside the image root.
        """
        root = self.root.resolve()
        full = (root / relative_path).resolve()
        if not full.is_relative_to(root):
            raise ValueError(f"{relative_path!r} resolves to {full}, outside the image root {root}")
        return full

    def load_rgb(self, relative_path: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
        return load_rgb(self.resolve(relative_path), self.max_pixels, draft_size)

    def load_verified_rgb(
        self, relative_path: str, expected_sha256: str, draft_size: tuple[int, int] | None = None
    ) -> Image.Image:
        """`load_rgb` from bytes verified to be the catalogued ones (raises FileChangedError otherwise)."""
        return load_verified_rgb(self.resolve(relative_path), expected_sha256, self.max_pixels, draft_size)

    def review_pins(self) -> dict[str, str]:
        """path -> keep/remove from `<image_root>/.imgdedup/review.{csv,yaml}` (empty if absent)."""
        return read_review_file(find_review_file(self.root))

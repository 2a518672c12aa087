"""Fixtures of the robustness tests (helpers in robustness_support.py)."""
from pathlib import Path

import pytest

from robustness_support import write_photo_tiles


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A folder of 40 distinct photo tiles (read-only for the tests: each run writes elsewhere)."""
    folder = tmp_path_factory.mktemp("photos") / "images"
    write_photo_tiles(folder, 40)
    return folder

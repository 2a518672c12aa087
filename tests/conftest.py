"""Shared fixtures: the public benchmark data, a tiny saved ViT, a folder of distinct photo tiles
(image helpers for tests: synthetic_images.py)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = PROJECT_ROOT.parent / "shared" / "bench" / "data"


# The development loop is `pytest -m "not slow"`: pure logic, each test well under a second or
# two. Every test outside these files runs a pipeline, a server, a browser or another process,
# and is marked `slow` here (CI runs everything), so a new test of that kind is slow by default;
# a slow test among the fast files carries `@pytest.mark.slow` itself.
FAST_TEST_PATHS = (
    "tests/core/",
    "tests/checks/test_check_logic.py",
    "tests/resources/test_lancedb.py",
    "tests/test_definitions.py",
    "tests/test_code_quality.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(item.path).resolve().relative_to(PROJECT_ROOT).as_posix()
        if not path.startswith(FAST_TEST_PATHS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def bench_data() -> Path:
    if not BENCH_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {BENCH_DATA}")
    return BENCH_DATA


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer ViT saved with `save_pretrained`, loadable by AutoModel."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    directory = tmp_path_factory.mktemp("tiny-vit")
    ViTModel(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def photo_tiles(tmp_path_factory) -> Path:
    """A folder of 40 distinct photo tiles (read-only for the tests: each run writes elsewhere)."""
    from synthetic_images import write_photo_tiles

    folder = tmp_path_factory.mktemp("photos") / "images"
    write_photo_tiles(folder, 40)
    return folder

"""Fixtures for the UI tests: a small photo folder with planted copies, a finished in-process run,
and a headless Debian chromium (installed by `.ci/run`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image, ImageEnhance
from synthetic_images import sample_photo

from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"

# Distinct skimage photos (they ship inside the scikit-image wheel: no network).
ORIGINALS = {
    "astronaut": "photos/astronaut.png",
    "chelsea": "photos/animals/chelsea.jpg",
    "coffee": "photos/coffee.jpg",
    "rocket": "photos/rocket.jpg",
    "coins": "photos/coins.png",
    "camera": "photos/camera.jpg",
    "clock": "photos/clock.jpg",
    "moon": "photos/moon.png",
    "hubble_deep_field": "photos/hubble_deep_field.jpg",
    "immunohistochemistry": "photos/immunohistochemistry.png",
}
# Planted groups: two groups of exact copies, two of near-duplicates (resized, brightened).
EXPECTED_GROUPS = {"duplicate": 2, "near_duplicate": 2}


# Chromium headless as root in a container, with nothing reaching out to the network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def write_ui_images(root: Path) -> Path:
    """Write 14 files: 10 distinct photos, an exact byte copy, a lossless re-encode (identical
    pixels), a half-size copy and a brightened copy. 6 of 14 end up labelled (under the default
    `max_duplicate_fraction` of 0.5), so every check passes and `training_manifest` materializes."""
    for name, relative in ORIGINALS.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image = sample_photo(name)
        if target.suffix == ".jpg":
            image.save(target, format="JPEG", quality=92, subsampling="4:2:0")
        else:
            image.save(target, format="PNG")
    copies = root / "copies"
    copies.mkdir()
    shutil.copyfile(root / ORIGINALS["chelsea"], copies / "chelsea-backup.jpg")
    with Image.open(root / ORIGINALS["coffee"]) as coffee:
        coffee.convert("RGB").save(copies / "coffee-export.png", format="PNG")
    with Image.open(root / ORIGINALS["rocket"]) as rocket:
        rocket.resize((rocket.width // 2, rocket.height // 2), Image.Resampling.LANCZOS).save(
            copies / "rocket-half.jpg", quality=90
        )
    with Image.open(root / ORIGINALS["astronaut"]) as astronaut:
        ImageEnhance.Brightness(astronaut.convert("RGB")).enhance(1.15).save(
            copies / "astronaut-bright.jpg", quality=90
        )
    return root


@pytest.fixture(scope="session")
def ui_images(tmp_path_factory) -> Path:
    return write_ui_images(tmp_path_factory.mktemp("ui-images"))


@pytest.fixture(scope="session")
def ui_run(ui_images, tmp_path_factory):
    """The whole job (assets and checks) run in-process on `ui_images` with the offline backbone."""
    settings = Settings(image_root=str(ui_images), out_dir=str(tmp_path_factory.mktemp("ui-out")), embedder="offline")
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(DEDUP_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
    return settings, result


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A function running headless chromium on one URL with extra flags; returns stdout."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Debian chromium is not installed: `apt-get install chromium` (.ci/run installs it when it can)")
    profile = tmp_path_factory.mktemp("chromium-profile")

    def run(url: str, *flags: str, timeout: float = 60) -> str:
        command = [
            executable,
            "--headless",
            *CHROMIUM_ARGS,
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            *flags,
            url,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if completed.returncode != 0:
            raise RuntimeError(f"chromium exited with {completed.returncode} on {url}: {completed.stderr[-2000:]}")
        return completed.stdout

    return run


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by playwright (its own browser download is never used)."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("Debian chromium is not installed: `apt-get install chromium` (.ci/run installs it when it can)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dev extra: bash scripts/setup.sh"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=list(CHROMIUM_ARGS),
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """`test-artifacts/` at the repo root (git-ignored): screenshots a person can open after CI."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

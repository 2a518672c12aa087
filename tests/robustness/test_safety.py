"""Safety: reads stay inside the image root, writes inside the output folder, the pixel limit is on
by default, the UI binds to loopback, and bad configuration stops `imgdedup run` before any work."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from synthetic_images import write_noise_png

from imgdedup_pipeline import cli
from imgdedup_pipeline.core.images import DEFAULT_MAX_PIXELS, ImageRejected
from imgdedup_pipeline.core.settings import Settings, SettingsError
from imgdedup_pipeline.definitions import resources_for
from imgdedup_pipeline.resources.image_store import ImageStoreResource
from imgdedup_pipeline.resources.output_store import OutputStoreResource

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --- Reads stay inside the image root -----------------------------------------------------------


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "root"
    write_noise_png(root / "inside.png", size=(4, 4))
    write_noise_png(tmp_path / "outside" / "secret.png", seed=1)
    (root / "escape.png").symlink_to(tmp_path / "outside" / "secret.png")
    (root / "alias.png").symlink_to(root / "inside.png")
    (root / "escape_dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    return root


@pytest.mark.parametrize(
    "relative",
    ["../outside/secret.png", "escape.png", "escape_dir/secret.png", "sub/../../outside/secret.png"],
    ids=["dot_dot", "file_symlink", "folder_symlink", "dot_dot_after_a_folder"],
)
def test_image_store_refuses_paths_that_leave_the_root(image_root, relative):
    store = ImageStoreResource(image_root=str(image_root))
    with pytest.raises(ValueError, match="outside the image root"):
        store.resolve(relative)
    with pytest.raises(ValueError, match="outside the image root"):
        store.load_rgb(relative)


def test_image_store_refuses_absolute_paths(image_root):
    store = ImageStoreResource(image_root=str(image_root))
    with pytest.raises(ValueError, match="outside the image root"):
        store.load_rgb(str(image_root.parent / "outside" / "secret.png"))


def test_symlinks_inside_the_root_are_followed(image_root):
    store = ImageStoreResource(image_root=str(image_root))
    assert store.resolve("alias.png") == (image_root / "inside.png").resolve()
    assert store.load_rgb("alias.png").size == (4, 4)


def test_discovery_does_not_follow_escaping_symlinks(image_root):
    found = {item.path: item.rejection for item in ImageStoreResource(image_root=str(image_root)).discover()}
    assert found == {
        "alias.png": None,
        "escape.png": "symlink_outside_root",
        "inside.png": None,
    }  # escape_dir is not walked


# --- Writes stay inside the output folder -------------------------------------------------------


@pytest.fixture
def output_store(tmp_path) -> OutputStoreResource:
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    return OutputStoreResource(out_dir=str(tmp_path / "out"))


@pytest.mark.parametrize(
    "name",
    ["../clean.csv", "state/../../clean.csv", "/tmp/imgdedup-clean.csv", "linked/clean.csv", "planted.csv"],
    ids=["dot_dot", "dot_dot_inside_a_folder", "absolute", "symlinked_folder", "symlink_planted_at_the_export_name"],
)
def test_exports_are_never_written_outside_the_output_folder(output_store, tmp_path, name):
    (output_store.root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    victim = tmp_path / "elsewhere" / "victim.csv"
    victim.write_text("keep me\n")
    (output_store.root / "planted.csv").symlink_to(victim)
    table = pd.DataFrame({"path": ["a.png"], "uniqueness": [0.5]})

    with pytest.raises(ValueError, match="outside"):
        output_store.write_table(name, table)
    with pytest.raises(ValueError, match="outside"):
        output_store.write_json(name, {"x": 1})

    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["victim.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]
    assert not Path("/tmp/imgdedup-clean.csv").exists()


def test_nested_export_names_inside_the_folder_are_fine(output_store):
    written = output_store.write_table("state/sub/table.parquet", pd.DataFrame({"a": [1]}))
    assert written == (output_store.root / "state" / "sub" / "table.parquet").resolve()
    assert pd.read_parquet(written)["a"].tolist() == [1]


# --- Decompression bombs: the pixel limit is on by default --------------------------------------


def test_pixel_limit_is_on_by_default_and_configurable(tmp_path):
    assert Settings().max_pixels == DEFAULT_MAX_PIXELS == 100_000_000
    assert ImageStoreResource(image_root=str(tmp_path)).max_pixels == DEFAULT_MAX_PIXELS
    resources = resources_for(Settings(image_root=str(tmp_path), out_dir=str(tmp_path / "out")))
    assert resources["image_store"].max_pixels == DEFAULT_MAX_PIXELS
    assert Settings.from_env({"IMGDEDUP_MAX_PIXELS": "4000000"}).max_pixels == 4_000_000
    with pytest.raises(SettingsError, match="max_pixels must be positive, got 0"):
        Settings(image_root=str(tmp_path), max_pixels=0)


def test_default_image_store_refuses_an_image_over_the_limit_from_its_header(tmp_path):
    # 10001 x 10000 declared: 1 pixel-row over 100 MP. Only the header is written: nothing to decode.
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 10_001, 10_000, 8, 2, 0, 0, 0)
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ImageRejected) as caught:
        ImageStoreResource(image_root=str(tmp_path)).load_rgb("big.png")
    assert caught.value.reason == "too_many_pixels"


# --- The UI binds to loopback -------------------------------------------------------------------


@pytest.fixture
def ui_script_with_fake_dagster(tmp_path) -> Path:
    """scripts/ui.sh copied beside a `.venv/bin/dg` that prints its arguments (and an `imgdedup`
    that does nothing: the demo sample and the report server are not under test)."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "ui.sh"
    script.write_text((PROJECT_ROOT / "scripts" / "ui.sh").read_text())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("dg", 'printf "%s\\n" "$@"'), ("imgdedup", "true")):
        fake = bin_dir / name
        fake.write_text(f"#!/usr/bin/env bash\n{body}\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.parametrize(
    "host, expected", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")], ids=["default_loopback", "explicit_override"]
)
def test_ui_script_binds_to_loopback_unless_told_otherwise(ui_script_with_fake_dagster, host, expected):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOST"}
    if host:
        env["DAGSTER_HOST"] = host
    completed = subprocess.run(
        ["bash", str(ui_script_with_fake_dagster)], env=env, capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.split("\n")
    args = lines[lines.index("dev") :]
    assert args[args.index("--host") + 1] == expected


# --- Bad configuration fails fast, before any work -----------------------------------------------


@pytest.fixture
def images(tmp_path) -> Path:
    write_noise_png(tmp_path / "images" / "a.png")
    return tmp_path / "images"


def run_cli_in_process(capsys, *args) -> tuple[int, str]:
    code = cli.main(["run", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda tmp: tmp / "a_file" / "out", "is not a folder"),
        (lambda tmp: tmp / "a_file", "is not a folder"),
        (lambda tmp: Path("/proc/imgdedup-out"), "cannot be created or written"),
    ],
    ids=["parent_is_a_file", "out_is_a_file", "pseudo_file_system"],
)
def test_unwritable_output_folder_fails_fast_with_exit_2(tmp_path, images, capsys, monkeypatch, make_out, message):
    if str(make_out(tmp_path)).startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "a_file").write_text("a file, not a folder")
    code, err = run_cli_in_process(capsys, "--images", images, "--out", make_out(tmp_path), "--embedder", "offline")
    assert code == cli.EXIT_CONFIG
    assert message in err and "choose a writable --out" in err
    assert not (tmp_path / "home").exists()  # nothing ran: not even the Dagster instance was created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway; the /proc case covers root")
def test_read_only_output_folder_fails_fast_with_exit_2(tmp_path, images, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = run_cli_in_process(capsys, "--images", images, "--out", locked / "out", "--embedder", "offline")
    finally:
        locked.chmod(0o755)
    assert code == cli.EXIT_CONFIG and "cannot be created or written" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--embedder", "word2vec"], "invalid choice"),
        (
            ["--embedder", "offline", "--duplicate-threshold", "0.2", "--near-duplicate-threshold", "0.1"],
            "duplicate < near_duplicate",
        ),
        (["--embedder", "offline", "--max-duplicate-fraction", "1.5"], "max_duplicate_fraction must be within [0, 1]"),
        (["--embedder", "offline", "--batch-size", "0"], "must be positive"),
    ],
    ids=["unknown_embedder", "thresholds_out_of_order", "fraction_above_one", "zero_batch_size"],
)
def test_other_bad_values_fail_fast(tmp_path, images, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    try:
        code, err = run_cli_in_process(capsys, "--images", images, "--out", tmp_path / "out", *extra)
    except SystemExit as exit_:  # argparse rejects unknown choices itself, with exit status 2
        code, err = exit_.code, capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert message in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "home").exists()

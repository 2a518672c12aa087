"""A corpus of bad and awkward files, generated at test time: each one is either decoded correctly
or lands in `rejected_images` with a specific reason, and a whole-graph run over all of them
finishes with every file in exactly one of clean / duplicates / rejected.

Kinds that a plain folder cannot produce on every machine (a permission error when the tests run
as root, a file deleted between listing and reading) are produced by wrapping the real call at
the point where it happens (`open`, `os.scandir`, discovery), never by replacing our own code.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import PIL.Image
import pytest
from PIL import Image

from imgdedup_pipeline.core import images as core_images
from imgdedup_pipeline.core.catalog import build_catalog
from imgdedup_pipeline.core.images import pixel_hash
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import DEDUP_JOB, build_definitions
from imgdedup_pipeline.resources import image_store

WHITE = (255, 255, 255)
BOMB_SIDE = 12_000  # 144 MP declared, above the default 100 MP limit


@dataclass(frozen=True)
class Case:
    """One file of the corpus and the outcome the pipeline owes it.

    Attributes:
        kind: the id of the test.
        path: the path as the tables show it (relative to the root, '/'-separated).
        reason: the expected rejection reason, or None when the file must be decoded.
        pixels: for decoded files, the RGB pixels the decode must give (H, W, 3) uint8.
        frames: frames / pages the file holds (the first one is used).
        source_mode: Pillow mode of the file before conversion to RGB.
    """

    kind: str
    path: str
    reason: str | None = None
    pixels: np.ndarray | None = None
    frames: int = 1
    source_mode: str | None = None


@dataclass(frozen=True)
class Corpus:
    root: Path
    cases: dict[str, Case]
    open_denied: frozenset[str]  # absolute paths whose `open` raises PermissionError
    vanish_after_listing: frozenset[str]  # deleted right after discovery
    vanish_while_opening: frozenset[str]  # deleted as it is opened for reading (or inside Image.open), after every stat
    swap_after_listing: tuple[tuple[str, str], ...]  # (file, target): replaced by a symlink after discovery
    unlistable_folders: frozenset[str]  # os.scandir raises PermissionError


def _rng_pixels(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_bytes(array: np.ndarray, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **params)
    return buffer.getvalue()


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _bilevel_png_bomb(side: int) -> bytes:
    """A complete, valid 1-bit PNG of side x side white pixels: a few KB on disk, side² pixels
    (and 3·side² bytes of RGB) once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _composited(color: tuple[int, int, int], alpha: np.ndarray) -> np.ndarray:
    """What a fully opaque `color` / fully transparent (-> white) mask decodes to."""
    out = np.empty((*alpha.shape, 3), np.uint8)
    out[alpha == 255] = color
    out[alpha == 0] = WHITE
    return out


def build_bad_corpus(root: Path) -> Corpus:
    """Write one file (or folder / link) per kind under `root`; return the expected outcomes."""
    root.mkdir(parents=True)
    cases: list[Case] = []

    def add(kind: str, path: str, **expected) -> Path:
        cases.append(Case(kind, path, **expected))
        return root / path

    add("zero_byte", "zero_byte.png", reason="empty_file").write_bytes(b"")
    jpeg = _jpeg_bytes(_rng_pixels(64, 64, 1))
    add("truncated_jpeg", "truncated.jpg", reason="truncated").write_bytes(jpeg[: len(jpeg) // 2])
    png = _png_bytes(_rng_pixels(64, 64, 2))
    add("truncated_png", "truncated.png", reason="truncated").write_bytes(png[: len(png) // 2])
    add("random_bytes_jpg", "random_bytes.jpg", reason="not_an_image").write_bytes(np.random.default_rng(3).bytes(4096))
    add("text_named_png", "notes.png", reason="not_an_image").write_text("shopping list: milk, eggs\n")
    html = "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n"
    add("html_named_jpg", "download.jpg", reason="not_an_image").write_text(html)
    add("decompression_bomb", "bomb.png", reason="too_many_pixels").write_bytes(_bilevel_png_bomb(BOMB_SIDE))

    one = np.array([[[200, 10, 30]]], np.uint8)
    add("one_pixel", "one_pixel.png", pixels=one, source_mode="RGB").write_bytes(_png_bytes(one))
    strip = _rng_pixels(3, 20_000, 4)
    add("wide_strip_20000px", "wide_strip.png", pixels=strip, source_mode="RGB").write_bytes(_png_bytes(strip))

    cmyk_path = add("cmyk_jpeg", "cmyk.jpg", source_mode="CMYK")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk_path, quality=95)  # pure red in CMYK
    with Image.open(cmyk_path) as decoded:  # the RGB the file holds, checked against red below
        cases[-1] = Case("cmyk_jpeg", "cmyk.jpg", pixels=np.asarray(decoded.convert("RGB")), source_mode="CMYK")

    ramp16 = np.linspace(0, 65535, 32, dtype=np.uint16).reshape(2, 16)
    gray8 = np.rint(ramp16 * (255.0 / 65535.0)).astype(np.uint8)
    Image.fromarray(ramp16).save(add("png_16_bit", "gray16.png", pixels=np.dstack([gray8] * 3), source_mode="I;16"))

    alpha = np.zeros((4, 6), np.uint8)
    alpha[:2] = 255
    indices = (alpha == 255).astype(np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette([0, 0, 0, 200, 20, 120] + [0] * 762)
    palette.save(
        add("palette_png_transparency", "palette.png", pixels=_composited((200, 20, 120), alpha), source_mode="P"),
        transparency=0,
    )
    la = Image.merge("LA", [Image.fromarray(np.full((4, 6), 80, np.uint8)), Image.fromarray(alpha)])
    la.save(add("la_png", "gray_alpha.png", pixels=_composited((80, 80, 80), alpha), source_mode="LA"))
    rgba = np.dstack([np.full((4, 6, 3), (10, 200, 30), np.uint8), alpha])
    rgba[2:, :, :3] = 0  # colour hidden under transparent pixels must not matter
    Image.fromarray(rgba).save(
        add("rgba_png", "rgba.png", pixels=_composited((10, 200, 30), alpha), source_mode="RGBA")
    )
    gray = np.random.default_rng(5).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(gray).save(add("grayscale_png", "gray.png", pixels=np.dstack([gray] * 3), source_mode="L"))

    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (5, 4), c) for c in colors]
    gif = add(
        "animated_gif_first_frame",
        "animated.gif",
        pixels=np.full((4, 5, 3), colors[0], np.uint8),
        frames=3,
        source_mode="P",
    )
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    pages = [_rng_pixels(6, 9, 10 + i) for i in range(3)]
    tiff = add("multipage_tiff_first_page", "pages.tiff", pixels=pages[0], frames=3, source_mode="RGB")
    Image.fromarray(pages[0]).save(tiff, save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90° clockwise
    rotated_path = add("exif_orientation_6", "rotated.jpg", source_mode="RGB")
    Image.fromarray(_rng_pixels(6, 10, 6)).save(rotated_path, exif=exif, quality=95)
    with Image.open(rotated_path) as stored:  # stored pixels, without applying the tag
        upright = np.rot90(np.asarray(stored.convert("RGB")), k=-1)
    cases[-1] = Case("exif_orientation_6", "rotated.jpg", pixels=upright, source_mode="RGB")

    with open(os.fsencode(root) + b"/caf\xe9.png", "wb") as latin1:  # Latin-1 'café', not UTF-8
        latin1.write(_png_bytes(_rng_pixels(3, 3, 7)))
    add("non_utf8_name", "caf\\xe9.png", reason="non_utf8_name")
    long_name = "ü" * 125 + "x.png"
    assert len(long_name.encode()) == 255  # NAME_MAX on Linux
    long_pixels = _rng_pixels(5, 6, 8)
    add("name_of_255_bytes", long_name, pixels=long_pixels, source_mode="RGB").write_bytes(_png_bytes(long_pixels))

    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png_bytes(_rng_pixels(4, 4, 9)))
    add("symlink_outside_root", "escape.png", reason="symlink_outside_root").symlink_to(outside / "secret.png")
    add("symlink_loop", "loop_a.png", reason="symlink_loop").symlink_to(root / "loop_b.png")
    add("symlink_loop_partner", "loop_b.png", reason="symlink_loop").symlink_to(root / "loop_a.png")

    locked_pixels = _rng_pixels(4, 4, 11)
    locked = root / "chmod_000.png"
    locked.write_bytes(_png_bytes(locked_pixels))
    locked.chmod(0)
    if _readable(locked):  # root (CAP_DAC_OVERRIDE) reads it anyway: then it must decode correctly
        add("unreadable_chmod_000", "chmod_000.png", pixels=locked_pixels, source_mode="RGB")
    else:
        add("unreadable_chmod_000", "chmod_000.png", reason="unreadable")
    denied = add("unreadable_open_denied", "denied.png", reason="unreadable")
    denied.write_bytes(_png_bytes(_rng_pixels(4, 4, 12)))
    (root / "locked_folder").mkdir()
    (root / "locked_folder" / "inside.png").write_bytes(_png_bytes(_rng_pixels(4, 4, 13)))
    add("unreadable_folder", "locked_folder/", reason="unreadable_folder")

    gone = add("disappears_after_listing", "gone_after_listing.png", reason="disappeared")
    gone.write_bytes(_png_bytes(_rng_pixels(4, 4, 14)))
    vanishing = add("disappears_while_opening", "gone_while_opening.png", reason="disappeared")
    vanishing.write_bytes(_png_bytes(_rng_pixels(4, 4, 15)))
    swapped = add("swapped_for_escaping_symlink_after_listing", "swapped.png", reason="symlink_outside_root")
    swapped.write_bytes(_png_bytes(_rng_pixels(4, 4, 17)))

    (root / "folder.jpg").mkdir()
    inner = _rng_pixels(8, 8, 16)
    add("folder_named_like_an_image", "folder.jpg/inner.png", pixels=inner, source_mode="RGB").write_bytes(
        _png_bytes(inner)
    )
    os.mkfifo(add("named_pipe_png", "pipe.png", reason="not_a_regular_file"))

    (root / "README.txt").write_text("not an image extension: never discovered")
    return Corpus(
        root=root,
        cases={case.kind: case for case in cases},
        open_denied=frozenset({str(denied)}),
        vanish_after_listing=frozenset({str(gone)}),
        vanish_while_opening=frozenset({str(vanishing)}),
        swap_after_listing=((str(swapped), str(outside / "secret.png")),),
        unlistable_folders=frozenset({str(root / "locked_folder")}),
    )


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return True
    except PermissionError:
        return False


@contextmanager
def corpus_hooks(corpus: Corpus):
    """Produce the corpus's timing- and permission-dependent failures at the real call sites."""
    real_open, real_image_open, real_scandir = builtins.open, PIL.Image.open, os.scandir
    real_discover = core_images.discover_image_files

    def open_(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) in corpus.open_denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        if (
            isinstance(file, (str, os.PathLike))
            and os.fspath(file) in corpus.vanish_while_opening
            and os.path.lexists(file)
        ):
            os.unlink(file)  # the catalog reads a file's bytes once (then hashes and decodes them): gone at that read
        return real_open(file, *args, **kwargs)

    def image_open(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)) and os.fspath(fp) in corpus.vanish_while_opening:
            os.unlink(fp)  # after discovery and after every stat: only the read itself fails
        return real_image_open(fp, *args, **kwargs)

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in corpus.unlistable_folders:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def discover_then_delete(image_root, *args, **kwargs):
        found = real_discover(image_root, *args, **kwargs)
        for path in corpus.vanish_after_listing:
            os.unlink(path)
        for path, target in corpus.swap_after_listing:
            os.unlink(path)
            os.symlink(target, path)
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", open_)
        patch.setattr(PIL.Image, "open", image_open)
        patch.setattr(os, "scandir", scandir)
        patch.setattr(core_images, "discover_image_files", discover_then_delete)
        patch.setattr(image_store, "discover_image_files", discover_then_delete)
        yield


@pytest.fixture(scope="module")
def corpus_catalog(tmp_path_factory):
    """Discovery and the catalog (the `raw_images` / `rejected_images` tables) over the corpus."""
    corpus = build_bad_corpus(tmp_path_factory.mktemp("bad-input") / "root")
    with corpus_hooks(corpus):
        discovered = core_images.discover_image_files(corpus.root)
        images, rejected = build_catalog(corpus.root, discovered, workers=2)
    return corpus, discovered, images.set_index("path"), rejected.set_index("path")


KINDS = [
    "zero_byte",
    "truncated_jpeg",
    "truncated_png",
    "random_bytes_jpg",
    "text_named_png",
    "html_named_jpg",
    "decompression_bomb",
    "one_pixel",
    "wide_strip_20000px",
    "cmyk_jpeg",
    "png_16_bit",
    "palette_png_transparency",
    "la_png",
    "rgba_png",
    "grayscale_png",
    "animated_gif_first_frame",
    "multipage_tiff_first_page",
    "exif_orientation_6",
    "non_utf8_name",
    "name_of_255_bytes",
    "symlink_outside_root",
    "symlink_loop",
    "unreadable_chmod_000",
    "unreadable_open_denied",
    "unreadable_folder",
    "disappears_after_listing",
    "disappears_while_opening",
    "swapped_for_escaping_symlink_after_listing",
    "folder_named_like_an_image",
    "named_pipe_png",
]


def test_every_kind_in_the_corpus_has_a_test(corpus_catalog):
    corpus = corpus_catalog[0]
    assert set(corpus.cases) - {"symlink_loop_partner"} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_bad_input_outcome(corpus_catalog, kind):
    corpus, _, images, rejected = corpus_catalog
    case = corpus.cases[kind]
    if case.reason is not None:
        assert case.path in rejected.index, f"{case.path} should be rejected as {case.reason}"
        assert case.path not in images.index
        row = rejected.loc[case.path]
        assert row["reason"] == case.reason, row["detail"]
        assert row["image_id"] == core_images.image_id_for(case.path)
        return
    assert case.path in images.index, f"{case.path} should decode; rejected as {rejected['reason'].get(case.path)}"
    row = images.loc[case.path]
    height, width = case.pixels.shape[:2]
    assert (row["width"], row["height"]) == (width, height)
    assert row["pixel_hash"] == pixel_hash(Image.fromarray(case.pixels))
    assert row["frames"] == case.frames
    assert row["source_mode"] == case.source_mode


def test_decompression_bomb_is_refused_from_its_header(corpus_catalog):
    corpus, _, _, rejected = corpus_catalog
    case = corpus.cases["decompression_bomb"]
    assert (corpus.root / case.path).stat().st_size < 64_000  # tiny file...
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in rejected.loc[case.path, "detail"]  # ...huge declared size


def test_cmyk_jpeg_is_red_and_exif_rotation_turns_the_image(corpus_catalog):
    corpus, _, images, _ = corpus_catalog
    red = corpus.cases["cmyk_jpeg"].pixels
    np.testing.assert_allclose(red.reshape(-1, 3).mean(axis=0), (255, 0, 0), atol=12)
    assert tuple(images.loc["rotated.jpg", ["width", "height"]]) == (6, 10)  # stored as 10 x 6


def test_rejections_say_what_to_fix(corpus_catalog):
    _, _, _, rejected = corpus_catalog
    assert "not valid UTF-8" in rejected.loc["caf\\xe9.png", "detail"]
    assert "outside the image root" in rejected.loc["escape.png", "detail"]
    assert "named pipe" in rejected.loc["pipe.png", "detail"]
    assert "Permission denied" in rejected.loc["denied.png", "detail"]


def test_folder_named_like_an_image_is_walked_not_read(corpus_catalog):
    _, discovered, images, rejected = corpus_catalog
    paths = {item.path for item in discovered}
    assert "folder.jpg" not in paths and "folder.jpg" not in rejected.index
    assert "folder.jpg/inner.png" in images.index


def test_catalog_places_every_discovered_file_once(corpus_catalog):
    corpus, discovered, images, rejected = corpus_catalog
    expected = {case.path for case in corpus.cases.values()}
    assert sorted(item.path for item in discovered) == sorted(expected)
    assert set(images.index).isdisjoint(rejected.index)
    assert set(images.index) | set(rejected.index) == expected


def test_whole_graph_run_over_the_corpus_finishes_and_accounts_for_every_file(tmp_path):
    corpus = build_bad_corpus(tmp_path / "root")
    out = tmp_path / "out"
    # A corpus of odd files holds look-alikes (solid colours): the duplicate gate is not the point here.
    settings = Settings(image_root=str(corpus.root), out_dir=str(out), embedder="offline", max_duplicate_fraction=1.0)
    job = build_definitions(settings).resolve_job_def(DEDUP_JOB)
    with corpus_hooks(corpus), dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    failures = [event.step_failure_data.error.message[:500] for event in result.get_step_failure_events()]
    assert result.success, failures

    clean = pd.read_csv(out / "clean.csv", keep_default_na=False)
    duplicates = pd.read_csv(out / "duplicates.csv", keep_default_na=False)
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    placed = [*clean["path"], *duplicates["path"], *rejected["path"]]
    expected = {case.path for case in corpus.cases.values()}
    assert len(placed) == len(set(placed)), "a file is in more than one collection"
    assert set(placed) == expected
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons == {case.path: case.reason for case in corpus.cases.values() if case.reason is not None}

    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "clean_dataset"]
    books = event.materialization.metadata["accounting"].value
    assert books["discovered"] == len(expected)
    assert books["clean"] + books["duplicates"] + books["rejected"] == books["discovered"]
    scores = pd.read_csv(out / "uniqueness.csv", keep_default_na=False)
    assert set(scores["path"]) == {case.path for case in corpus.cases.values() if case.reason is None}
    assert scores["uniqueness"].between(0, 1).all()

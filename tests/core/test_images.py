"""Tests for core.images: discovery, decoding edge cases, pixel hashes and content-pixel counts.

Every image is a few pixels large and written into `tmp_path` by the test itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.core.distances import (
    EDGE_AGREEMENT_BITS,
    confirmed_invariant_hamming,
    invariant_hamming,
)
from imgdedup_pipeline.core.grouping import keep_policy_order
from imgdedup_pipeline.core.images import (
    _DIHEDRAL_ARRAY_VIEWS,
    _DIHEDRAL_BATCH_VIEWS,
    DEFAULT_MAX_PIXELS,
    DIHEDRAL_TRANSPOSES,
    EDGE_HASH_WORDS,
    PHASH_INPUT_SIDE,
    DiscoveredFile,
    ImageRejected,
    content_pixel_count,
    describe_image,
    dihedral_edge_hashes,
    dihedral_phashes,
    discover_image_files,
    edge_hash_of_grid,
    file_sha256,
    image_id_for,
    informative_phashes,
    load_rgb,
    open_image,
    perceptual_hashes,
    phash_grid,
    pixel_hash,
    to_rgb,
)

WHITE = (255, 255, 255)


def random_rgb(height: int, width: int, seed: int = 0, low: int = 50) -> np.ndarray:
    """Random RGB pixels, kept away from black so that black borders are clearly borders."""
    return np.random.default_rng(seed).integers(low, 256, (height, width, 3), dtype=np.uint8)


def save(array: np.ndarray, path: Path, mode: str | None = None, **params) -> Path:
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **params)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height but which carries no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def rgb_array(path: Path) -> np.ndarray:
    return np.asarray(load_rgb(path))


# --- Identity: pixel hash, file hash, image id ---------------------------------------------------


def test_pixel_hash_covers_pixels_and_size():
    pixels = np.zeros((2, 6, 3), np.uint8)
    same_bytes_other_shape = Image.fromarray(pixels.reshape(3, 4, 3))
    assert pixel_hash(Image.fromarray(pixels)) != pixel_hash(same_bytes_other_shape)
    changed = pixels.copy()
    changed[1, 5, 2] = 1
    assert pixel_hash(Image.fromarray(pixels)) != pixel_hash(Image.fromarray(changed))
    assert pixel_hash(Image.fromarray(pixels)) == pixel_hash(Image.fromarray(pixels.copy()))


def test_pixel_hash_requires_rgb():
    with pytest.raises(ValueError, match="RGB"):
        pixel_hash(Image.new("L", (2, 2)))


@pytest.mark.parametrize(
    "suffix, params",
    [
        (".png", {"compress_level": 0}),
        (".png", {"optimize": True}),
        (".bmp", {}),
        (".tiff", {}),
        (".webp", {"lossless": True}),
    ],
    ids=["png_uncompressed", "png_optimized", "bmp", "tiff", "webp_lossless"],
)
def test_lossless_reencode_is_identical(tmp_path, suffix, params):
    pixels = random_rgb(12, 16)
    original = save(pixels, tmp_path / "original.png", compress_level=9)
    copy = save(pixels, tmp_path / f"copy{suffix}", **params)
    assert file_sha256(original) != file_sha256(copy)
    assert describe_image(original).pixel_hash == describe_image(copy).pixel_hash


@pytest.mark.parametrize("quality", [95, 75], ids=["q95", "q75"])
def test_jpeg_recompression_is_not_identical(tmp_path, quality):
    pixels = random_rgb(16, 16)
    first = save(pixels, tmp_path / "first.jpg", quality=90)
    recompressed = save(rgb_array(first), tmp_path / "again.jpg", quality=quality)
    assert describe_image(first).pixel_hash != describe_image(recompressed).pixel_hash
    assert describe_image(first).pixel_hash != describe_image(save(pixels, tmp_path / "lossless.png")).pixel_hash


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3000))
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_image_id_is_stable_and_path_based():
    assert image_id_for("a/b.png") == image_id_for("a/b.png")
    assert image_id_for("a/b.png") != image_id_for("a/c.png")
    assert len(image_id_for("x.png")) == 16


# --- Decoding: modes ----------------------------------------------------------------------------


def _half_transparent(color) -> tuple[np.ndarray, np.ndarray]:
    """(alpha mask, expected RGB): top half opaque `color`, bottom half transparent -> white."""
    alpha = np.zeros((4, 6), np.uint8)
    alpha[:2] = 255
    expected = np.empty((4, 6, 3), np.uint8)
    expected[:2] = color
    expected[2:] = WHITE
    return alpha, expected


def _write_rgba(path: Path) -> np.ndarray:
    alpha, expected = _half_transparent((10, 200, 30))
    rgba = np.dstack([np.full((4, 6, 3), (10, 200, 30), np.uint8), alpha])
    rgba[2:, :, :3] = (0, 0, 0)  # hidden colour under transparent pixels must not matter
    save(rgba, path)
    return expected


def _write_la(path: Path) -> np.ndarray:
    alpha, expected = _half_transparent((80, 80, 80))
    Image.merge("LA", [Image.fromarray(np.full((4, 6), 80, np.uint8)), Image.fromarray(alpha)]).save(path)
    return expected


def _write_palette(path: Path) -> np.ndarray:
    _, expected = _half_transparent((200, 20, 120))
    indices = np.zeros((4, 6), np.uint8)
    indices[:2] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 200, 20, 120] + [0] * 762)
    image.save(path, transparency=0)
    return expected


def _write_gif_transparent(path: Path) -> np.ndarray:
    expected = _write_palette(path.with_suffix(".png"))
    with Image.open(path.with_suffix(".png")) as image:
        image.save(path, transparency=0)
    return expected


@pytest.mark.parametrize(
    "writer, name, source_mode",
    [
        (_write_rgba, "rgba.png", "RGBA"),
        (_write_la, "la.png", "LA"),
        (_write_palette, "palette.png", "P"),
        (_write_gif_transparent, "palette.gif", "P"),
    ],
    ids=["RGBA", "LA", "palette_tRNS", "gif_transparency"],
)
def test_transparency_is_composited_over_white(tmp_path, writer, name, source_mode):
    expected = writer(tmp_path / name)
    rgb_equivalent = save(expected, tmp_path / "rgb_equivalent.png")
    facts = describe_image(tmp_path / name)
    assert facts.source_mode == source_mode
    np.testing.assert_array_equal(rgb_array(tmp_path / name), expected)
    assert facts.pixel_hash == describe_image(rgb_equivalent).pixel_hash


def test_semi_transparent_pixels_blend_with_white():
    rgba = Image.fromarray(np.array([[[0, 0, 0, 128], [255, 0, 0, 64]]], np.uint8))
    blended = np.asarray(to_rgb(rgba)).astype(int)
    np.testing.assert_allclose(blended[0, 0], [127, 127, 127], atol=1)
    np.testing.assert_allclose(blended[0, 1], [255, 191, 191], atol=1)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_is_composited_over_white(tmp_path, mode):
    expected = _write_rgba(tmp_path / "rgba.png")
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:2] = (10, 200, 30)
    key = (0, 0, 0)
    if mode == "L":
        pixels = np.zeros((4, 6), np.uint8)
        pixels[:2] = 90
        expected[:2] = (90, 90, 90)
        key = 0
    save(pixels, tmp_path / "keyed.png", transparency=key)
    np.testing.assert_array_equal(rgb_array(tmp_path / "keyed.png"), expected)


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0), (257, 1), (32768, 128), (65535, 255)],
    ids=["black", "one_step", "mid_gray", "white"],
)
def test_16_bit_png_is_scaled_not_saturated(tmp_path, value, expected):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((3, 4), value, np.uint16)).save(path)
    facts = describe_image(path)
    assert facts.source_mode.startswith("I;16")
    pixels = rgb_array(path)
    assert pixels.shape == (3, 4, 3)
    assert (pixels == expected).all()


def test_16_bit_gradient_keeps_its_order(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.linspace(0, 65535, 16, dtype=np.uint16).reshape(1, 16)).save(path)
    row = rgb_array(path)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) > 0).all()


def test_cmyk_jpeg_decodes_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    facts = describe_image(path)
    assert facts.source_mode == "CMYK"
    pixels = rgb_array(path)
    assert load_rgb(path).mode == "RGB"
    np.testing.assert_allclose(pixels[4, 4].astype(int), [255, 0, 0], atol=12)


@pytest.mark.parametrize(
    "orientation, transpose",
    [
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_270),
        (8, Image.Transpose.ROTATE_90),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
    ids=["orientation3_180", "orientation6_90cw", "orientation8_90ccw", "orientation2_mirror"],
)
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, orientation, transpose, suffix):
    stored = Image.fromarray(random_rgb(6, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = tmp_path / f"tagged{suffix}"
    stored.save(tagged, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    # The pre-rotated image without EXIF: decode the tagged file's stored pixels, rotate, save losslessly.
    with Image.open(tagged) as raw:
        raw.load()
        upright = raw.convert("RGB").transpose(transpose)
    upright.save(tmp_path / "upright.png")

    facts = describe_image(tagged)
    rotates = orientation in (6, 8)
    assert (facts.width, facts.height) == ((6, 10) if rotates else (10, 6))
    assert facts.pixel_hash == describe_image(tmp_path / "upright.png").pixel_hash


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (5, 4), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[0].save(tmp_path / "first.png")
    facts = describe_image(tmp_path / "anim.gif")
    assert facts.frames == 3
    assert (rgb_array(tmp_path / "anim.gif") == (255, 0, 0)).all()
    assert facts.pixel_hash == describe_image(tmp_path / "first.png").pixel_hash


def test_truncated_animated_gif_is_rejected(tmp_path):
    frames = [Image.fromarray(random_rgb(16, 16, seed)) for seed in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    data = (tmp_path / "anim.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected) as caught:
        describe_image(tmp_path / "cut.gif")
    assert caught.value.reason in ("truncated", "decode_error")


def test_mode_1_and_grayscale_become_rgb(tmp_path):
    gray = save(np.array([[0, 128, 255]], np.uint8), tmp_path / "gray.png")
    assert rgb_array(gray).tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "bw.png")
    assert rgb_array(tmp_path / "bw.png").tolist() == [[[0, 0, 0], [255, 255, 255]]]


# --- Decoding: rejections -----------------------------------------------------------------------


def test_zero_byte_file_is_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageRejected) as caught:
        describe_image(tmp_path / "empty.png")
    assert caught.value.reason == "empty_file"


@pytest.mark.parametrize(
    "suffix, keep_fraction",
    [(".jpg", 0.5), (".png", 0.5), (".jpg", 0.9)],
    ids=["jpeg_half", "png_half", "jpeg_tail_missing"],
)
def test_truncated_file_is_rejected(tmp_path, suffix, keep_fraction):
    full = save(random_rgb(48, 48, low=0), tmp_path / f"full{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(ImageRejected) as caught:
        describe_image(cut)
    assert caught.value.reason in ("truncated", "decode_error")
    assert caught.value.detail  # says what Pillow reported


def test_jpeg_cut_inside_its_header_is_rejected_as_truncated(tmp_path):
    full = save(random_rgb(48, 48, low=0), tmp_path / "full.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes(full.read_bytes()[:200])
    with pytest.raises(ImageRejected) as caught:
        describe_image(tmp_path / "cut.jpg")
    assert caught.value.reason == "truncated"


@pytest.mark.parametrize(
    "content", [b"hello, I am text", b"\x00" * 64, b"GIF89a"], ids=["text", "zeros", "bare_gif_magic"]
)
def test_non_image_bytes_are_not_an_image(tmp_path, content):
    (tmp_path / "fake.png").write_bytes(content)
    with pytest.raises(ImageRejected) as caught:
        describe_image(tmp_path / "fake.png")
    assert caught.value.reason in ("not_an_image", "decode_error", "truncated")
    if content.startswith(b"hello"):
        assert caught.value.reason == "not_an_image"


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (20_000, 20_000)], ids=["1e10_pixels", "4e8_pixels"])
def test_header_declaring_a_huge_image_is_too_many_pixels(tmp_path, width, height):
    path = png_header_only(tmp_path / "bomb.png", width, height)
    with pytest.raises(ImageRejected) as caught:
        describe_image(path)
    assert caught.value.reason == "too_many_pixels"


@pytest.mark.parametrize(
    "max_pixels, rejected", [(399, True), (400, False), (10_000, False)], ids=["below", "exactly", "above"]
)
def test_max_pixels_limit(tmp_path, max_pixels, rejected):
    path = save(random_rgb(20, 20), tmp_path / "twenty.png")
    if rejected:
        with pytest.raises(ImageRejected) as caught:
            load_rgb(path, max_pixels=max_pixels)
        assert caught.value.reason == "too_many_pixels"
        assert "400" in str(caught.value) or "20x20" in caught.value.detail
    else:
        assert load_rgb(path, max_pixels=max_pixels).size == (20, 20)


def test_images_below_the_default_max_pixels_are_not_bombs(tmp_path):
    width = height = 9_500  # 90.25 MP < DEFAULT_MAX_PIXELS
    assert width * height < DEFAULT_MAX_PIXELS
    path = png_header_only(tmp_path / "large.png", width, height)
    with open_image(path) as image:  # lazy: nothing is decoded
        assert image.size == (width, height)


# --- Content pixels (letterbox trimming) --------------------------------------------------------


@pytest.mark.parametrize(
    "border, pad",
    [((0, 0, 0), ((4, 4), (0, 0))), ((255, 255, 255), ((0, 0), (5, 3))), ((30, 30, 30), ((2, 6), (7, 1)))],
    ids=["black_letterbox", "white_pillarbox", "gray_uneven_frame"],
)
def test_uniform_borders_are_trimmed(border, pad):
    content = random_rgb(10, 12, low=100)
    framed = np.empty((10 + sum(pad[0]), 12 + sum(pad[1]), 3), np.uint8)
    framed[:] = border
    framed[pad[0][0] : pad[0][0] + 10, pad[1][0] : pad[1][0] + 12] = content
    assert content_pixel_count(Image.fromarray(framed)) == 120
    assert content_pixel_count(Image.fromarray(content)) == 120


def test_border_noise_within_tolerance_is_still_border():
    framed = np.zeros((20, 20, 3), np.uint8)
    framed[5:15, 5:15] = 200
    noise = np.random.default_rng(1).integers(0, 11, (20, 20, 3), dtype=np.uint8)
    noisy = np.where(framed == 0, noise, framed).astype(np.uint8)
    noisy[0, 0] = 0
    assert content_pixel_count(Image.fromarray(noisy)) == 100


def test_uniform_image_is_all_content():
    assert content_pixel_count(Image.new("RGB", (7, 3), (12, 34, 56))) == 21


def test_border_tolerance_is_per_channel():
    framed = np.zeros((10, 10, 3), np.uint8)
    framed[3:7, 3:7] = (0, 0, 100)
    assert content_pixel_count(Image.fromarray(framed)) == 16


def test_describe_image_reports_trimmed_content_pixels(tmp_path):
    content = random_rgb(24, 32)
    canvas = np.zeros((32, 32, 3), np.uint8)
    canvas[4:28] = content
    facts = describe_image(save(canvas, tmp_path / "letterboxed.png"))
    assert (facts.width, facts.height, facts.content_pixels, facts.frames) == (32, 32, 24 * 32, 1)


def test_letterboxed_copy_does_not_beat_its_original(tmp_path):
    content = random_rgb(24, 32)
    canvas = np.zeros((32, 32, 3), np.uint8)
    canvas[4:28] = content
    paths = {
        "original.png": save(content, tmp_path / "original.png"),
        "letterboxed.png": save(canvas, tmp_path / "letterboxed.png"),
    }
    rows = []
    for name, path in paths.items():
        facts = describe_image(path)
        rows.append(
            {
                "image_id": image_id_for(name),
                "path": name,
                "width": facts.width,
                "height": facts.height,
                "content_pixels": facts.content_pixels,
                "bytes": path.stat().st_size,
                "first_seen": pd.Timestamp("2024-01-01", tz="UTC"),
            }
        )
    assert rows[0]["content_pixels"] == rows[1]["content_pixels"]
    assert rows[1]["bytes"] > rows[0]["bytes"]  # the padding makes the file larger: bytes alone would pick it
    rank = keep_policy_order(pd.DataFrame(rows))
    assert rank[image_id_for("original.png")] < rank[image_id_for("letterboxed.png")]


# --- Perceptual hashes (rotation / flip invariant) ----------------------------------------------


def blocky_rgb(seed: int) -> Image.Image:
    """A 48x64 image of 8x8 random blocks: enough low-frequency structure for a stable pHash."""
    blocks = np.random.default_rng(seed).integers(0, 256, (6, 8, 3))
    return Image.fromarray(np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8))


def min_variant_bits(a: np.ndarray, b: np.ndarray) -> int:
    """Smallest Hamming distance between one's identity hash and any variant of the other."""
    forward = min(bin(int(a[0]) ^ int(v)).count("1") for v in b)
    backward = min(bin(int(b[0]) ^ int(v)).count("1") for v in a)
    return min(forward, backward)


@pytest.mark.parametrize("transpose", DIHEDRAL_TRANSPOSES[1:], ids=lambda t: t.name.lower())
def test_dihedral_phashes_match_rotated_and_flipped_copies(transpose):
    original = dihedral_phashes(blocky_rgb(0))
    turned = dihedral_phashes(blocky_rgb(0).transpose(transpose))
    assert original.shape == (8,) and original.dtype == np.uint64
    assert int(original[0]) != int(turned[0])  # the plain pHash alone would miss the copy
    assert min_variant_bits(original, turned) <= 2


@pytest.mark.parametrize("seed", range(6))
def test_dihedral_phashes_are_imagehash_phashes_of_each_transpose(seed):
    """The batched DCT gives, bit for bit, imagehash's pHash of each transposed 32x32 grid: the
    hashes stored in earlier catalogs and the calibrated pHash cutoff stay valid."""
    import imagehash

    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (6, 9, 3)), np.ones((24, 24, 1)))
    noisy = np.clip(smooth + rng.normal(0, 25 * (seed % 3), smooth.shape), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(noisy)
    grid = rgb.convert("L").resize((PHASH_INPUT_SIDE, PHASH_INPUT_SIDE), Image.Resampling.LANCZOS)
    expected = [int(str(imagehash.phash(grid if t is None else grid.transpose(t))), 16) for t in DIHEDRAL_TRANSPOSES]
    assert dihedral_phashes(rgb).tolist() == expected


def test_dihedral_phashes_separate_different_images_and_ignore_letterbox():
    first, second = dihedral_phashes(blocky_rgb(0)), dihedral_phashes(blocky_rgb(1))
    assert min_variant_bits(first, second) > 10
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[8:56] = np.asarray(blocky_rgb(0))
    assert min_variant_bits(first, dihedral_phashes(Image.fromarray(canvas))) <= 2


@pytest.mark.parametrize("seed", range(3))
def test_the_edge_hash_of_a_turned_grid_is_the_turned_bit_grid(seed):
    """`dihedral_edge_hashes` turns the stored identity edge hash exactly as the image: column v is
    the edge hash of the grid under pHash variant v, so the two signals pair variant for variant."""
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (6, 9, 3)), np.ones((24, 24, 1)))
    rgb = Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8))
    grid = phash_grid(rgb)
    turned = dihedral_edge_hashes(edge_hash_of_grid(grid)[None, :])
    assert turned.shape == (1, 8, EDGE_HASH_WORDS) and turned.dtype == np.uint64
    direct = [edge_hash_of_grid(np.ascontiguousarray(view(grid))).tolist() for view in _DIHEDRAL_ARRAY_VIEWS]
    assert turned[0].tolist() == direct
    assert len({tuple(words) for words in direct}) > 1  # the turns do move the bits: the test compares something
    stacked = np.stack([grid, grid.T])
    for array_view, batch_view in zip(_DIHEDRAL_ARRAY_VIEWS, _DIHEDRAL_BATCH_VIEWS, strict=True):
        np.testing.assert_array_equal(batch_view(stacked), np.stack([array_view(grid), array_view(grid.T)]))


def test_a_turned_copy_is_confirmed_and_opposite_quarters_of_a_symmetric_picture_are_not():
    """The turned pHash match of a true rotated copy keeps its bits; a quarter of a point-symmetric
    picture matches the opposite quarter turned 180 degrees in pHash but not in its edges."""
    from tests.synthetic_images import sample_photo

    retina = sample_photo("retina").resize((512, 512))
    quarter = retina.crop((0, 0, 256, 256))
    opposite = retina.crop((256, 256, 512, 512))
    copy = quarter.transpose(Image.Transpose.ROTATE_90)

    def hashes(image):
        phashes, edge = perceptual_hashes(image)
        return phashes[None, :], edge[None, :]

    (q, qe), (o, oe), (c, ce) = hashes(quarter), hashes(opposite), hashes(copy)
    assert invariant_hamming(q, o)[0] <= 10  # the pHash alone takes the opposite quarter for a turned copy
    assert confirmed_invariant_hamming(q, o, qe, oe, EDGE_AGREEMENT_BITS)[0] > 10
    assert confirmed_invariant_hamming(q, c, qe, ce, EDGE_AGREEMENT_BITS)[0] == invariant_hamming(q, c)[0] <= 2


def test_an_identity_match_needs_no_edge_agreement():
    picture = np.full((1, 8), 0x5555_5555_5555_5555, np.uint64)
    nearby = picture ^ np.uint64(0b111)
    far_edges = (np.zeros((1, EDGE_HASH_WORDS), np.uint64), np.full((1, EDGE_HASH_WORDS), 2**64 - 1, np.uint64))
    assert confirmed_invariant_hamming(picture, nearby, *far_edges, EDGE_AGREEMENT_BITS).tolist() == [3]
    turned_only = np.roll(nearby, 1, axis=1)  # the match now sits in a turned variant only
    turned_only[0, 0] = ~picture[0, 0]
    assert invariant_hamming(picture, turned_only)[0] == 3
    # The 3-bit turned match does not count; what is left is the identities, 64 bits apart.
    assert confirmed_invariant_hamming(picture, turned_only, *far_edges, EDGE_AGREEMENT_BITS)[0] == 64
    everything = EDGE_HASH_WORDS * 64  # every edge distance allowed
    assert confirmed_invariant_hamming(picture, turned_only, *far_edges, everything)[0] == 3


def grey_gradient(width: int, height: int) -> Image.Image:
    """A grey ramp from black to white along the longer side."""
    ramp = np.linspace(0, 255, max(width, height)).astype(np.uint8)
    grid = np.tile(ramp[None, :], (height, 1)) if width >= height else np.tile(ramp[:, None], (1, width))
    return Image.fromarray(grid).convert("RGB")


def nearly_flat(seed: int, std: float) -> Image.Image:
    noise = np.random.default_rng(seed).normal(128, std, (256, 256, 3))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))


FLAT_OR_ONE_DIMENSIONAL = {
    "solid_red": Image.new("RGB", (256, 256), (255, 0, 0)),
    "solid_green": Image.new("RGB", (256, 256), (0, 255, 0)),
    "solid_blue": Image.new("RGB", (256, 256), (0, 0, 255)),
    "solid_white": Image.new("RGB", (256, 256), WHITE),
    "solid_black": Image.new("RGB", (256, 256), (0, 0, 0)),
    "red_dot_1x1": Image.new("RGB", (1, 1), (255, 0, 0)),
    "grey_noise_std_1": nearly_flat(0, 1.0),
    "grey_gradient_30000x30": grey_gradient(30000, 30),
    "grey_gradient_30x30000": grey_gradient(30, 30000),
}


@pytest.mark.parametrize("name", FLAT_OR_ONE_DIMENSIONAL, ids=str)
def test_flat_and_one_dimensional_images_have_no_informative_phash(name):
    hashes = dihedral_phashes(FLAT_OR_ONE_DIMENSIONAL[name])
    assert not informative_phashes(hashes)
    assert not informative_phashes(hashes[None, :]).any()


def test_flat_images_get_all_zero_phashes():
    for name in ("solid_red", "solid_black", "red_dot_1x1", "grey_noise_std_1"):
        assert dihedral_phashes(FLAT_OR_ONE_DIMENSIONAL[name]).tolist() == [0] * 8, name
    # Pixel noise that pHash's 32x32 grid averages away is flat at the hash's scale too.
    assert dihedral_phashes(nearly_flat(0, 8.0)).tolist() == [0] * 8


@pytest.mark.parametrize("picture", ["blocks", "astronaut", "camera"], ids=str)
def test_pictures_have_informative_phashes_with_half_their_bits_set(picture):
    from skimage import data

    rgb = {
        "blocks": blocky_rgb(0),
        "astronaut": Image.fromarray(data.astronaut()),
        "camera": Image.fromarray(data.camera()).convert("RGB"),
    }[picture]
    hashes = dihedral_phashes(rgb)
    assert informative_phashes(hashes)
    assert [int(np.bitwise_count(h)) for h in hashes] == [32] * 8  # pHash: coefficients above their median


@pytest.mark.parametrize(
    "set_bits, informative",
    [(0, False), (1, False), (23, False), (24, True), (32, True), (40, True), (41, False), (64, False)],
    ids=lambda value: str(value),
)
def test_informative_phashes_needs_24_bits_set_and_24_clear_in_the_identity_hash(set_bits, informative):
    identity = np.uint64((1 << set_bits) - 1) if set_bits < 64 else np.uint64(2**64 - 1)
    variants = np.array([identity, 0, 0, 0, 0, 0, 0, 0], dtype=np.uint64)  # variants share its ties
    assert bool(informative_phashes(variants)) is informative
    assert informative_phashes(np.stack([variants, variants]).view(np.int64)).tolist() == [informative] * 2


def test_describe_image_reports_signed_phashes(tmp_path):
    path = tmp_path / "blocks.png"
    blocky_rgb(3).save(path)
    facts = describe_image(path)
    assert len(facts.phashes) == 8
    assert np.array(facts.phashes, np.int64).view(np.uint64).tolist() == dihedral_phashes(blocky_rgb(3)).tolist()
    assert (
        np.array(facts.edge_hash, np.int64).view(np.uint64).tolist()
        == edge_hash_of_grid(phash_grid(blocky_rgb(3))).tolist()
    )


# --- Discovery ----------------------------------------------------------------------------------


def _touch_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(random_rgb(2, 2), path)


def test_discovery_walks_nested_dirs_sorted_and_skips_other_extensions(tmp_path):
    for relative in ("b/z.png", "a/deep/er/x.JPG", "a/y.webp", "top.jpeg", "c.gif", "d.BMP", "e.tif", "f.tiff"):
        _touch_png(tmp_path / relative)
    for relative in ("notes.txt", "a/readme.md", "a/deep/photo.png.bak", "raw.cr2", ".imgdedup/review.csv", "noext"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    found = discover_image_files(tmp_path)
    paths = [f.path for f in found]
    assert paths == sorted(paths)
    assert paths == ["a/deep/er/x.JPG", "a/y.webp", "b/z.png", "c.gif", "d.BMP", "e.tif", "f.tiff", "top.jpeg"]
    assert all(f.rejection is None for f in found)


def test_discovery_accepts_str_and_returns_posix_paths(tmp_path):
    _touch_png(tmp_path / "one" / "two.png")
    assert discover_image_files(str(tmp_path)) == [DiscoveredFile("one/two.png", None)]


def test_symlinks_inside_outside_broken_and_looping(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch_png(root / "real.png")
    _touch_png(outside / "secret.png")
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "alias.png").symlink_to(root / "real.png")
    (root / "broken.png").symlink_to(root / "missing.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "ping.png").symlink_to(root / "pong.png")
    (root / "pong.png").symlink_to(root / "ping.png")
    found = {f.path: f.rejection for f in discover_image_files(root)}
    assert found == {
        "alias.png": None,
        "broken.png": "broken_symlink",
        "escape.png": "symlink_outside_root",
        "loop.png": "symlink_loop",
        "ping.png": "symlink_loop",
        "pong.png": "symlink_loop",
        "real.png": None,
    }


def test_directory_symlinks_are_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch_png(root / "sub" / "a.png")
    _touch_png(outside / "b.png")
    (root / "sub" / "back_to_root").symlink_to(root, target_is_directory=True)  # a directory loop
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    assert [f.path for f in discover_image_files(root)] == ["sub/a.png"]


def test_directory_with_an_image_extension_is_not_a_file(tmp_path):
    (tmp_path / "folder.png").mkdir()
    _touch_png(tmp_path / "folder.png" / "inner.png")
    assert [f.path for f in discover_image_files(tmp_path)] == ["folder.png/inner.png"]


@pytest.mark.parametrize("make", ["missing", "file"], ids=["missing_root", "root_is_a_file"])
def test_bad_root_raises_value_error(tmp_path, make):
    root = tmp_path / "root"
    if make == "file":
        root.write_text("not a directory")
    with pytest.raises(ValueError, match="not an existing directory"):
        discover_image_files(root)


def test_empty_root_finds_nothing(tmp_path):
    assert discover_image_files(tmp_path) == []


def test_verified_load_refuses_bytes_that_are_not_the_catalogued_ones(tmp_path):
    from imgdedup_pipeline.core.images import FileChangedError, file_sha256, load_verified_rgb

    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    catalogued = file_sha256(path)
    assert load_verified_rgb(path, catalogued).getpixel((0, 0)) == (200, 10, 10)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(path)
    with pytest.raises(FileChangedError, match="changed since it was catalogued"):
        load_verified_rgb(path, catalogued)


def test_withdrawn_contents_move_every_file_of_the_content_to_rejected():
    from imgdedup_pipeline.core.collections import withdraw_changed_contents

    images = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "path": ["a.png", "b.png", "c.png"],
            "bytes": [1, 2, 3],
            "pixel_hash": ["h1", "h2", "h1"],
        }
    )
    rejected = pd.DataFrame(
        {
            "image_id": ["z"],
            "path": ["z.png"],
            "bytes": pd.array([None], "Int64"),
            "reason": ["empty_file"],
            "detail": [""],
        }
    )
    kept, moved = withdraw_changed_contents(images, rejected, {"h1": "a.png: the file changed"})
    assert kept["path"].tolist() == ["b.png"]
    assert moved.set_index("path")["reason"].to_dict() == {
        "a.png": "changed_during_run",
        "c.png": "changed_during_run",
        "z.png": "empty_file",
    }
    assert len(kept) + len(moved) == len(images) + len(rejected)


def test_importing_the_image_module_leaves_pillows_limits_alone():
    """Pillow's bomb guard is process-wide: only opening an image through this tool sets it."""
    import subprocess
    import sys

    probe = (
        "from PIL import Image, ImageFile; before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES); "
        "import core.images, core.catalog, resources.image_store; "
        "assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before, (Image.MAX_IMAGE_PIXELS, before)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("letterboxed", [False, True])
def test_describe_image_trims_once_and_agrees_with_each_measure_computed_alone(bench_data, tmp_path, letterboxed):
    """The catalog computes the content box once for the content-pixel count and the pHashes;
    both equal what each function computes by itself, with and without borders to trim."""
    from imgdedup_pipeline.core.images import (
        content_box,
        content_pixel_count,
        describe_image,
        dihedral_phashes,
        load_rgb,
    )

    photo = Image.open(
        sorted((bench_data / "idealo-imagededup" / "tests" / "data" / "base_images").glob("*.jpg"))[0]
    ).convert("RGB")
    if letterboxed:
        canvas = Image.new("RGB", (photo.width, photo.height + 120), (0, 0, 0))
        canvas.paste(photo, (0, 60))
        photo = canvas
    path = tmp_path / "photo.png"
    photo.save(path)
    rgb = load_rgb(path)
    assert (content_box(rgb) != (0, 0, rgb.width, rgb.height)) == letterboxed
    facts = describe_image(path)
    assert facts.content_pixels == content_pixel_count(rgb)
    assert facts.phashes == tuple(dihedral_phashes(rgb).view(np.int64).tolist())

"""Embedding-stage throughput against the machine's matmul roofline, and the levers that move it.

Usage:
    .venv/bin/python bench/embedding.py [--repeats 3] [--images 24] [--out /tmp/imgdedup-bench-embedding]
                                        [--precision-vit-batch 8] [--precision-cnn-batch 32]
                                        [--skip vit cnn decode stage precision bf16]

Measures, in one process (ratios are what to compare; the machine is shared and noisy):
  * fp32 (and bf16) matmul GFLOP/s: best of several GEMMs, square and ViT-shaped, taken before and
    after the model runs (the roofline uses the best seen);
  * model FLOPs per image (torch.utils.flop_counter.FlopCounterMode) for ViT-B/16 at 224 (random
    weights from `ViTConfig()` defaults, built with transformers, not downloaded) and for the offline
    backbone (EfficientNet-Lite0);
  * forward-only images/s under each lever (autograd mode, attention kernel, batch size, threads,
    channels-last, bf16), each the median of `--repeats` timed batches after one warm-up batch,
    and as a fraction of the roofline (matmul GFLOP/s / model GFLOP per image);
  * decode-only images/s on ~12 MP JPEGs (made from scikit-image photos, upscaled) with and without
    Pillow draft mode, serially and in 2 worker threads / processes;
  * the real embedding stage (`core.embedders.embed_in_batches` over those JPEGs through
    `core.images.load_rgb`) with decode serial vs. overlapped with the forward pass, at fp32 and bf16;
  * `precision`: fp32 vs bf16 (the embedders' `precision` option) through the real code path
    (`embed_in_batches` -> border trim -> the embedder's preprocessing -> forward -> normalisation),
    over in-memory photos so that decoding is not what is timed: ViT-B/16 at batch 8 and the
    offline backbone at batch 32. Each timed pass is paired with an fp32 matmul measurement taken
    right before it; images/s, fraction of the fp32 roofline and the bf16/fp32 speed-up are medians
    over `--repeats` pairs; plus the min cosine between the two precisions' vectors;
  * bf16 vs fp32 agreement of the offline backbone (the embedders, `precision="bf16"`) on every
    image of ../shared/bench/data (cosine between the two embeddings of an image, and
    near-duplicate pair decisions that flip).

Prints one line per figure and ends with one line of JSON holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from imgdedup_pipeline.core.embedders import (  # noqa: E402
    EfficientNetLite0Embedder,
    HuggingFaceEmbedder,
    embed_in_batches,
)
from imgdedup_pipeline.core.images import load_rgb  # noqa: E402

BENCH_DATA = PROJECT_ROOT.parent / "shared" / "bench" / "data"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FIGURES: dict = {}


def report(key: str, value, text: str) -> None:
    FIGURES[key] = value
    print(f"{key:55s} {text}", flush=True)


def median_rate(run, items: int, repeats: int) -> float:
    """Items/s: one warm-up call, then the median over `repeats` timed calls."""
    run()
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates)


MATMUL_SHAPES = [(2048, 2048, 2048), (8 * 197, 768, 3072), (8 * 197, 3072, 768)]


def matmul_gflops(dtype: torch.dtype = torch.float32, repeats: int = 3) -> float:
    """Best GFLOP/s over square and ViT-B/16-shaped GEMMs (the machine's reachable peak now)."""
    best = 0.0
    for m, k, n in MATMUL_SHAPES:
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        with torch.inference_mode():
            torch.mm(a, b)
            for _ in range(repeats):
                started = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * m * k * n / 1e9 / (time.perf_counter() - started))
    return best


def paired_rate(run, items: int, repeats: int, flops_per_item: float) -> tuple[float, float]:
    """(median items/s, median fraction of the fp32 roofline), each timed call paired with a matmul
    measurement taken right before it, so that contention from other jobs on this shared machine
    hits both sides of the ratio alike."""
    run()
    rates, fractions = [], []
    for _ in range(repeats):
        gflops = matmul_gflops(repeats=1)
        started = time.perf_counter()
        run()
        rate = items / (time.perf_counter() - started)
        rates.append(rate)
        fractions.append(rate * flops_per_item / 1e9 / gflops)
    return statistics.median(rates), statistics.median(fractions)


def count_flops(model, example) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(example)
    return counter.get_total_flops() / example.shape[0]


def build_vit(attn: str):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig()
    config._attn_implementation = attn
    return ViTModel(config, add_pooling_layer=False).eval()


def forward_rate(
    model, batch: torch.Tensor, repeats: int, flops: float, grad_mode: str = "inference"
) -> tuple[float, float]:
    def run():
        if grad_mode == "inference":
            with torch.inference_mode():
                model(batch)
        elif grad_mode == "no_grad":
            with torch.no_grad():
                model(batch)
        else:
            model(batch)

    return paired_rate(run, batch.shape[0], repeats, flops)


def bench_vit(args, roofline_gflops: float) -> None:
    torch.manual_seed(0)
    eager, sdpa = build_vit("eager"), build_vit("sdpa")
    flops = count_flops(lambda x: sdpa(pixel_values=x), torch.randn(1, 3, 224, 224))
    report("vit_gflop_per_image", round(flops / 1e9, 2), f"{flops / 1e9:.2f} GFLOP per 224x224 image")
    roof = roofline_gflops * 1e9 / flops
    report("vit_roofline_images_per_s", round(roof, 3), f"{roof:.3f} images/s at {roofline_gflops:.1f} GFLOP/s")

    def measure(name, model, batch_size, grad_mode="inference", threads=None, dtype=torch.float32):
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            batch = torch.randn(batch_size, 3, 224, 224).to(dtype)
            rate, fraction = forward_rate(lambda x: model(pixel_values=x), batch, args.repeats, flops, grad_mode)
        finally:
            torch.set_num_threads(previous)
        report(
            f"vit_{name}_images_per_s",
            round(rate, 3),
            f"{rate:.3f} images/s = {fraction:.0%} of the fp32 roofline (paired)",
        )
        FIGURES[f"vit_{name}_roofline_fraction"] = round(fraction, 3)
        return rate

    measure("plain_eager_grad_bs1", eager, 1, grad_mode="grad")
    measure("eager_nograd_bs1", eager, 1, grad_mode="no_grad")
    measure("eager_inference_bs1", eager, 1)
    measure("sdpa_inference_bs1", sdpa, 1)
    measure("eager_inference_bs8", eager, 8)
    for batch_size in args.vit_batch_sizes:
        measure(f"sdpa_inference_bs{batch_size}", sdpa, batch_size)
    measure("sdpa_inference_bs8_1thread", sdpa, 8, threads=1)
    bf16 = build_vit("sdpa").to(torch.bfloat16)
    bf16.load_state_dict(sdpa.state_dict())
    measure("sdpa_inference_bs8_bf16", bf16, 8, dtype=torch.bfloat16)
    with torch.inference_mode():
        x = torch.randn(4, 3, 224, 224)
        a = sdpa(pixel_values=x).last_hidden_state[:, 0]
        b = bf16(pixel_values=x.to(torch.bfloat16)).last_hidden_state[:, 0].float()
    cosine = torch.nn.functional.cosine_similarity(a, b).min().item()
    report("vit_bf16_min_cosine_vs_fp32", round(cosine, 5), f"{cosine:.5f} (random weights, random input)")


def bench_cnn(args, roofline_gflops: float) -> None:
    embedder = EfficientNetLite0Embedder()
    model = embedder._model
    features = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)  # noqa: E731
    flops = count_flops(features, torch.randn(1, 3, 224, 224))
    report(
        "cnn_gflop_per_image", round(flops / 1e9, 3), f"{flops / 1e9:.3f} GFLOP per 224x224 image (EfficientNet-Lite0)"
    )
    roof = roofline_gflops * 1e9 / flops
    report("cnn_roofline_images_per_s", round(roof, 1), f"{roof:.1f} images/s at {roofline_gflops:.1f} GFLOP/s")

    def measure(name, batch_size, channels_last=False, threads=None, dtype=torch.float32, grad_mode="inference"):
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        net = model.to(dtype).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        try:
            batch = torch.randn(batch_size, 3, 224, 224).to(dtype)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            rate, fraction = forward_rate(
                lambda x: net.forward_head(net.forward_features(x), pre_logits=True),
                batch,
                args.repeats,
                flops,
                grad_mode,
            )
        finally:
            torch.set_num_threads(previous)
            model.float().to(memory_format=torch.contiguous_format)
        report(
            f"cnn_{name}_images_per_s",
            round(rate, 1),
            f"{rate:.1f} images/s = {fraction:.0%} of the fp32 roofline (paired)",
        )
        FIGURES[f"cnn_{name}_roofline_fraction"] = round(fraction, 3)

    measure("plain_grad_bs1", 1, grad_mode="grad")
    measure("inference_bs1", 1)
    for batch_size in args.cnn_batch_sizes:
        measure(f"inference_bs{batch_size}", batch_size)
        measure(f"inference_bs{batch_size}_channels_last", batch_size, channels_last=True)
    measure("inference_bs32_1thread", 32, threads=1)
    measure("inference_bs32_bf16", 32, dtype=torch.bfloat16)
    measure("inference_bs32_channels_last_bf16", 32, channels_last=True, dtype=torch.bfloat16)


def make_large_jpegs(folder: Path, count: int) -> list[Path]:
    """~12 MP JPEGs (4000 x 3000) upscaled from scikit-image's photos, quality 90."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), np.stack([data.camera()] * 3, axis=-1)]
    paths = []
    for i in range(count):
        path = folder / f"large_{i:03d}.jpg"
        if not path.exists():
            image = Image.fromarray(photos[i % len(photos)]).resize((4000, 3000), Image.Resampling.BICUBIC)
            if i >= len(photos):  # distinct content per file
                image = image.rotate(i * 7, resample=Image.Resampling.BILINEAR, fillcolor=(i * 5 % 255, 80, 160))
            image.save(path, quality=90)
        paths.append(path)
    return paths


def _decode(path_and_draft):
    path, draft = path_and_draft
    return load_rgb(path, draft_size=draft).size


def bench_decode(paths: list[Path], repeats: int) -> None:
    megapixels = np.mean([np.prod(Image.open(p).size) for p in paths]) / 1e6
    size_mb = np.mean([p.stat().st_size for p in paths]) / 1e6
    report(
        "decode_megapixels",
        round(float(megapixels), 1),
        f"{megapixels:.1f} MP, {size_mb:.1f} MB per JPEG, {len(paths)} files",
    )
    for draft_name, draft in (("full", None), ("draft224", (224, 224))):
        work = [(p, draft) for p in paths]
        rate = median_rate(lambda: [_decode(w) for w in work], len(work), repeats)
        report(f"decode_{draft_name}_serial_images_per_s", round(rate, 2), f"{rate:.2f} images/s")
        with ThreadPoolExecutor(2) as pool:
            rate = median_rate(lambda: list(pool.map(_decode, work)), len(work), repeats)
        report(f"decode_{draft_name}_2threads_images_per_s", round(rate, 2), f"{rate:.2f} images/s")
        with ProcessPoolExecutor(2) as pool:
            rate = median_rate(lambda: list(pool.map(_decode, work)), len(work), repeats)
        report(f"decode_{draft_name}_2processes_images_per_s", round(rate, 2), f"{rate:.2f} images/s")


def bench_stage(paths: list[Path], repeats: int, vit_dir: Path) -> None:
    """The real stage: decode (draft) + trim + preprocess + forward, serial vs. overlapped."""
    by_hash = {f"{i:04d}": str(p) for i, p in enumerate(paths)}
    stages = (
        ("cnn", EfficientNetLite0Embedder(), 32),
        ("vit", HuggingFaceEmbedder(str(vit_dir)), 8),
        ("cnn_bf16", EfficientNetLite0Embedder(precision="bf16"), 32),
        ("vit_bf16", HuggingFaceEmbedder(str(vit_dir), precision="bf16"), 8),
    )
    for name, embedder, batch_size in stages:
        loader = lambda path, draft: load_rgb(path, draft_size=draft)  # noqa: E731
        results = {}
        for mode, workers in (("serial", 0), ("overlapped", 2)):
            out = []

            def run():
                out.clear()
                out.extend(
                    v for _, v in embed_in_batches(by_hash, embedder, loader, batch_size, decode_workers=workers)
                )

            rate = median_rate(run, len(by_hash), repeats)
            results[mode] = np.concatenate(out)
            report(
                f"stage_{name}_{mode}_images_per_s",
                round(rate, 2),
                f"{rate:.2f} images/s (12 MP JPEGs, draft decode, batch {batch_size})",
            )
        same = float(np.abs(results["serial"] - results["overlapped"]).max())
        report(f"stage_{name}_overlap_max_abs_difference", same, f"{same:g} (overlapped vs serial embeddings)")


def _photos(count: int) -> list[Image.Image]:
    """`count` distinct in-memory RGB photos (scikit-image's, 300-640 px, rotated per index)."""
    from skimage import data

    base = [
        Image.fromarray(a).convert("RGB")
        for a in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera())
    ]
    return [base[i % len(base)].rotate(i * 3, resample=Image.Resampling.BILINEAR) for i in range(count)]


def bench_precision(args, vit_dir: Path) -> None:
    """fp32 vs bf16 through the real embedder code, paired with fp32 matmul measurements."""
    configs = (
        ("vit", lambda precision: HuggingFaceEmbedder(str(vit_dir), precision=precision), args.precision_vit_batch, 3),
        ("cnn", lambda precision: EfficientNetLite0Embedder(precision=precision), args.precision_cnn_batch, 2),
    )
    for name, build, batch_size, batches in configs:
        photos = _photos(batch_size * batches)
        by_key = {f"{i:04d}": f"photo-{i:04d}" for i in range(len(photos))}
        by_path = {f"photo-{i:04d}": photo for i, photo in enumerate(photos)}
        embedders = {precision: build(precision) for precision in ("fp32", "bf16")}

        def run(embedder):
            return np.concatenate(
                [v for _, v in embed_in_batches(by_key, embedder, lambda path, draft: by_path[path], batch_size)]
            )

        vectors = {precision: run(embedder) for precision, embedder in embedders.items()}  # warm-up: loads the weights
        if name == "vit":
            model = embedders["fp32"]._loaded[1]
            flops = count_flops(lambda x: model(pixel_values=x), torch.randn(1, 3, 224, 224))
        else:
            model = embedders["fp32"]._model
            flops = count_flops(
                lambda x: model.forward_head(model.forward_features(x), pre_logits=True), torch.randn(1, 3, 224, 224)
            )
        rates, fractions, speedups = {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}, []
        for _ in range(args.repeats):
            for precision, embedder in embedders.items():
                gflops = matmul_gflops(repeats=1)
                started = time.perf_counter()
                run(embedder)
                rate = len(photos) / (time.perf_counter() - started)
                rates[precision].append(rate)
                fractions[precision].append(rate * flops / 1e9 / gflops)
            speedups.append(rates["bf16"][-1] / rates["fp32"][-1])
        for precision in ("fp32", "bf16"):
            key = f"precision_{name}_{precision}_bs{batch_size}"
            rate, fraction = statistics.median(rates[precision]), statistics.median(fractions[precision])
            report(
                f"{key}_images_per_s",
                round(rate, 3),
                f"{rate:.3f} images/s = {fraction:.0%} of the fp32 roofline "
                f"(embed_in_batches, paired, median of {args.repeats}; {flops / 1e9:.3f} GFLOP/image)",
            )
            FIGURES[f"{key}_roofline_fraction"] = round(fraction, 3)
            FIGURES[f"{key}_roofline_fractions_all"] = [round(f, 3) for f in fractions[precision]]
        speedup = statistics.median(speedups)
        report(
            f"precision_{name}_bf16_speedup",
            round(speedup, 2),
            f"{speedup:.2f}x bf16 over fp32 (median of per-repeat ratios {[round(x, 2) for x in speedups]})",
        )
        cosine = float(np.sum(vectors["fp32"] * vectors["bf16"], axis=1).min())
        report(
            f"precision_{name}_bf16_min_cosine_vs_fp32",
            round(cosine, 5),
            f"{cosine:.5f} over {len(photos)} photos ({embedders['bf16'].model_id})",
        )
        if name == "vit":
            # The HF preprocessing inside `embed` is on the measured path: its share, and that of
            # transformers' PIL backend (not used by the embedder; outputs differ by <= 1 grey level).
            from transformers import AutoImageProcessor

            processors = (
                ("default", embedders["fp32"]._loaded[0]),
                ("pil_backend", AutoImageProcessor.from_pretrained(str(vit_dir), backend="pil")),
            )
            for label, processor in processors:
                batch = photos[:batch_size]
                ms = 1000 / median_rate(lambda: processor(images=batch, return_tensors="pt"), len(batch), args.repeats)
                report(
                    f"precision_vit_processor_{label}_ms_per_image",
                    round(ms, 1),
                    f"{ms:.1f} ms/image ({type(processor).__name__}, batch {batch_size})",
                )


def bench_bf16_agreement() -> None:
    """Offline backbone in bf16 vs fp32 (the embedders) on every image of the shared benchmark sets."""
    from imgdedup_pipeline.core.images import ImageRejected

    paths = sorted(p for p in BENCH_DATA.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    images = []
    for path in paths:
        try:
            images.append(load_rgb(path, draft_size=(224, 224)))
        except ImageRejected:
            continue
    embed32, embed16 = EfficientNetLite0Embedder(), EfficientNetLite0Embedder(precision="bf16")
    fp32 = torch.from_numpy(np.concatenate([embed32.embed(images[i : i + 32]) for i in range(0, len(images), 32)]))
    bf16 = torch.from_numpy(np.concatenate([embed16.embed(images[i : i + 32]) for i in range(0, len(images), 32)]))
    cosine = (fp32 * bf16).sum(1)
    near = 0.1  # cosine distance of the default near-duplicate threshold (uniqueness 0.05)
    d32, d16 = 1 - fp32 @ fp32.T, 1 - bf16 @ bf16.T
    upper = torch.triu(torch.ones_like(d32, dtype=torch.bool), diagonal=1)
    flips = int(((d32 <= near) != (d16 <= near))[upper].sum())
    report(
        "cnn_bf16_min_cosine_vs_fp32",
        round(cosine.min().item(), 5),
        f"{cosine.min().item():.5f} over {len(images)} benchmark images",
    )
    report(
        "cnn_bf16_pair_decisions_flipped",
        flips,
        f"{flips} of {int(upper.sum())} pairs change side of the 0.05 threshold",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=24, help="large JPEGs for the decode and stage figures")
    parser.add_argument("--vit-batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--cnn-batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "imgdedup-bench-embedding"))
    parser.add_argument("--precision-vit-batch", type=int, default=8, help="ViT-B/16 batch of the fp32-vs-bf16 figures")
    parser.add_argument(
        "--precision-cnn-batch", type=int, default=32, help="offline backbone batch of the fp32-vs-bf16 figures"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["vit", "cnn", "decode", "stage", "precision", "bf16"])
    args = parser.parse_args()
    report("torch_threads", torch.get_num_threads(), f"{torch.get_num_threads()} (os.cpu_count() = {os.cpu_count()})")
    report("load_average_start", [round(x, 2) for x in os.getloadavg()], f"{os.getloadavg()} (1, 5, 15 min)")
    gflops_before = matmul_gflops()
    bf16_gflops = matmul_gflops(torch.bfloat16)
    report("matmul_bf16_gflops", round(bf16_gflops, 1), f"{bf16_gflops:.1f} GFLOP/s (bf16, AMX where the CPU has it)")
    if "vit" not in args.skip:
        bench_vit(args, gflops_before)
    if "cnn" not in args.skip:
        bench_cnn(args, gflops_before)
    gflops_after = matmul_gflops()
    report(
        "matmul_fp32_gflops_before",
        round(gflops_before, 1),
        f"{gflops_before:.1f} GFLOP/s (fp32, measured first; roofline used above)",
    )
    report(
        "matmul_fp32_gflops_after",
        round(gflops_after, 1),
        f"{gflops_after:.1f} GFLOP/s (fp32, measured after the models: noise check)",
    )
    out = Path(args.out)
    vit_dir = out / "vit-b16-random"
    if not (vit_dir / "config.json").exists():
        from transformers import ViTConfig, ViTImageProcessor, ViTModel

        torch.manual_seed(0)
        ViTModel(ViTConfig(), add_pooling_layer=False).save_pretrained(vit_dir)
        ViTImageProcessor().save_pretrained(vit_dir)
    if "precision" not in args.skip:
        bench_precision(args, vit_dir)
    paths = make_large_jpegs(out / "large-jpegs", args.images) if {"decode", "stage"} - set(args.skip) else []
    if "decode" not in args.skip:
        bench_decode(paths, args.repeats)
    if "stage" not in args.skip:
        bench_stage(paths, args.repeats, vit_dir)
    if "bf16" not in args.skip:
        bench_bf16_agreement()
    report("load_average_end", [round(x, 2) for x in os.getloadavg()], f"{os.getloadavg()} (1, 5, 15 min)")
    print(json.dumps(FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())

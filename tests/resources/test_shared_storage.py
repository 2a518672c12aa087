"""What workers share on object storage (IMGDEDUP_SHARED_STORAGE_URI), against moto's S3 server on
loopback: objects under a prefix, the export set switched by one pointer object, and the
embedding checkpoints as objects."""

import io
import json
import socket

import numpy as np
import pandas as pd
import pytest

from imgdedup_pipeline.core import export_set
from imgdedup_pipeline.core.checkpoints import ObjectStoreCheckpoint
from imgdedup_pipeline.core.export_set import MANIFEST_FILE
from imgdedup_pipeline.core.object_store import ObjectFolder, split_uri
from imgdedup_pipeline.core.shared_exports import (
    CURRENT_POINTER,
    add_to_published_set,
    publish,
    published_export,
    published_manifest,
    run_prefix,
    write_export,
)
from imgdedup_pipeline.resources.output_store import OutputStoreResource

moto_server = pytest.importorskip("moto.server", reason="needs the dev extra: pip install 'moto[server]'")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_env(s3_endpoint, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@pytest.fixture()
def folder(s3_env, request):
    """An empty bucket of its own for each test, and a prefix in it."""
    client = boto3.client("s3")
    bucket = "t-" + request.node.name.lower().replace("_", "-")[:50]
    client.create_bucket(Bucket=bucket)
    return ObjectFolder.from_uri(f"s3://{bucket}/team/imgdedup", client)


def test_uris_split_into_bucket_and_prefix():
    assert split_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        split_uri("/local/folder")


def test_objects_are_named_relative_to_the_prefix_and_never_above_it(folder):
    assert folder.get("a.txt") is None
    assert folder.put("a.txt", b"one") == f"s3://{folder.bucket}/team/imgdedup/a.txt"
    folder.put("sub/b.txt", b"two")
    folder.copy("a.txt", "sub/c.txt")
    assert folder.names() == ["a.txt", "sub/b.txt", "sub/c.txt"]
    assert folder.child("sub").names() == ["b.txt", "c.txt"] and folder.get("sub/c.txt") == b"one"
    folder.delete(["a.txt", "sub/b.txt", "never-written"])
    assert folder.names() == ["sub/c.txt"]
    for escaping in ("../other/x", "sub/../../x", "./x"):
        with pytest.raises(ValueError, match="would leave"):
            folder.put(escaping, b"x")


def read_csv(folder: ObjectFolder, name: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(published_export(folder, name)))


def test_publishing_switches_the_whole_set_at_once_and_carries_over_unwritten_names(folder, monkeypatch):
    assert published_manifest(folder) is None and published_export(folder, "clean.csv") is None
    write_export(folder, "run-a", "clean.csv", b"path\na.png\n")
    write_export(folder, "run-a", "report.html", b"<html>a</html>")
    publish(folder, "run-a")
    write_export(folder, "run-b", "clean.csv", b"path\nb.png\n")
    assert read_csv(folder, "clean.csv")["path"].tolist() == ["a.png"]  # written, not visible before publishing

    publish(folder, "run-b")
    manifest = published_manifest(folder)
    assert manifest["run_id"] == "run-b" and manifest["files"] == ["clean.csv", "report.html"]
    assert read_csv(folder, "clean.csv")["path"].tolist() == ["b.png"]
    assert published_export(folder, "report.html") == b"<html>a</html>"  # carried over from run-a
    assert json.loads(folder.get(f"exports/run-b/{MANIFEST_FILE}")) == manifest
    assert folder.get(f"exports/{CURRENT_POINTER}") == folder.get(f"exports/run-b/{MANIFEST_FILE}")

    def runs() -> set[str]:
        return {name.split("/")[1] for name in folder.names("exports/") if name.count("/") >= 2}

    write_export(folder, "run-c", "clean.csv", b"path\nc.png\n")
    write_export(folder, "unpublished", "clean.csv", b"path\nk.png\n")
    publish(folder, "run-c")
    # The previous set is kept for readers, older ones go; an unpublished set may be a run's still
    # being written.
    assert runs() == {"run-b", "run-c", "unpublished"}
    monkeypatch.setattr(export_set, "UNPUBLISHED_GRACE_S", -1.0)  # as if untouched for that long
    write_export(folder, "run-d", "clean.csv", b"path\nd.png\n")
    publish(folder, "run-d")
    assert runs() == {"run-c", "run-d"}


def test_a_gated_file_joins_the_published_set(folder):
    with pytest.raises(RuntimeError, match="no export set is published"):
        add_to_published_set(folder, "training_manifest.csv", b"path\n")
    write_export(folder, "run-a", "clean.csv", b"path\na.png\n")
    publish(folder, "run-a")
    add_to_published_set(folder, "training_manifest.csv", b"path,split\na.png,train\n")
    assert published_manifest(folder)["files"] == ["clean.csv", "training_manifest.csv"]
    assert read_csv(folder, "training_manifest.csv")["split"].tolist() == ["train"]


@pytest.mark.parametrize("run_id", ["", "a/b", ".hidden", CURRENT_POINTER])
def test_a_run_id_cannot_name_another_place(run_id):
    with pytest.raises(ValueError, match="not a run id"):
        run_prefix(run_id)


def test_checkpoint_batches_are_objects_read_back_whole(folder):
    checkpoint = ObjectStoreCheckpoint(folder.child("state", "embedding-checkpoints", "vectors_m"))
    assert checkpoint.shards() == [] and checkpoint.load() == {} and checkpoint.hashes() == set()
    first = np.arange(8, dtype=np.float32).reshape(2, 4)
    checkpoint.write(["h1", "h2"], first)
    checkpoint.write(["h3"], np.ones((1, 4), np.float64))
    assert len(checkpoint.shards()) == 2 and checkpoint.hashes() == {"h1", "h2", "h3"}
    loaded = checkpoint.load()
    np.testing.assert_array_equal(loaded["h2"], first[1])
    assert loaded["h3"].dtype == np.float32
    assert checkpoint.location == f"s3://{folder.bucket}/team/imgdedup/state/embedding-checkpoints/vectors_m"
    checkpoint.clear()
    assert checkpoint.shards() == []


def test_an_unreadable_checkpoint_batch_is_named_removed_and_embedded_again(folder):
    warnings: list[str] = []
    checkpoint = ObjectStoreCheckpoint(folder.child("checkpoints"), warnings.append)
    checkpoint.write(["h1"], np.ones((1, 4), np.float32))
    folder.put("checkpoints/batch-damaged.parquet", b"not parquet")
    assert checkpoint.hashes() == {"h1"}
    assert len(warnings) == 1 and "batch-damaged.parquet" in warnings[0]
    assert folder.get("checkpoints/batch-damaged.parquet") is None


def test_the_output_store_puts_exports_and_checkpoints_on_the_shared_storage(folder, tmp_path):
    store = OutputStoreResource(out_dir=str(tmp_path / "out"), shared_storage_uri=folder.uri())
    table = pd.DataFrame({"path": ["a.png"], "score": [0.5]})
    store.write_table("clean.csv", table, run_id="run-a")
    store.write_table("clean.parquet", table, run_id="run-a")
    store.write_export_bytes("report.html", b"<html/>", run_id="run-a")
    store.publish_exports("run-a")
    store.add_to_published_set("training_manifest.csv", table)
    store.embedding_checkpoint("vectors_m").write(["h1"], np.ones((1, 4), np.float32))

    pd.testing.assert_frame_equal(read_csv(folder, "clean.csv"), table)
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(published_export(folder, "clean.parquet"))), table)
    assert published_manifest(folder)["files"] == ["clean.csv", "clean.parquet", "report.html", "training_manifest.csv"]
    assert folder.child("state", "embedding-checkpoints", "vectors_m").names()
    assert not (tmp_path / "out").exists()  # nothing of it on the local disk


def test_the_catalog_is_shared_and_an_unreadable_one_is_only_decoded_again(folder, tmp_path):
    store = OutputStoreResource(out_dir=str(tmp_path / "out"), shared_storage_uri=folder.uri())
    other_worker = OutputStoreResource(out_dir=str(tmp_path / "elsewhere"), shared_storage_uri=folder.uri())
    images, warnings = pd.DataFrame({"path": ["a.png"], "pixel_hash": ["h1"]}), []
    assert store.read_catalog(tmp_path / "images", warnings.append) is None
    store.write_catalog(tmp_path / "images", images)
    pd.testing.assert_frame_equal(other_worker.read_catalog(tmp_path / "images", warnings.append), images)
    name = f"state/{store.catalog_name(tmp_path / 'images')}"
    folder.put(name, b"truncated")
    assert other_worker.read_catalog(tmp_path / "images", warnings.append) is None
    assert len(warnings) == 1 and name in warnings[0] and folder.get(name) is None
    assert not (tmp_path / "out").exists() and not (tmp_path / "elsewhere").exists()


def test_without_shared_storage_the_output_store_writes_under_out_dir(tmp_path):
    store = OutputStoreResource(out_dir=str(tmp_path))
    assert store.shared is None
    store.write_table("clean.csv", pd.DataFrame({"path": ["a.png"]}), run_id="run-a")
    store.publish_exports("run-a")
    assert (tmp_path / "clean.csv").is_symlink() and pd.read_csv(tmp_path / "clean.csv")["path"].tolist() == ["a.png"]
    assert store.embedding_checkpoint("vectors_m").location == str(
        tmp_path / "state" / "embedding-checkpoints" / "vectors_m"
    )


def test_the_cli_summary_names_the_published_set_on_the_shared_storage(folder, capsys):
    from imgdedup_pipeline import cli

    write_export(folder, "run-a", "clean.csv", b"path\na.png\n")
    publish(folder, "run-a")
    cli.print_shared_exports("run-a", folder.uri())
    assert f"clean.csv             {folder.uri('exports', 'run-a')}/clean.csv" in capsys.readouterr().out
    cli.print_shared_exports("run-b", folder.uri())  # a run that stopped before publishing
    assert capsys.readouterr().out == "this run published no exports\n"


def test_calibrated_thresholds_on_the_shared_storage_reach_every_worker_s_policy(folder):
    from imgdedup_pipeline.core.calibration import calibrated_threshold, read_calibrations, write_calibration
    from imgdedup_pipeline.resources.policy import DedupPolicyResource

    uri = folder.uri("state", "thresholds.json")
    assert read_calibrations(uri) == {} and calibrated_threshold(uri, "model-a") is None
    write_calibration(uri, "model-a", {"near_duplicate_threshold": 0.031})
    write_calibration(uri, "model-b", {"near_duplicate_threshold": 0.042})
    assert set(read_calibrations(uri)) == {"model-a", "model-b"}  # one model's record kept beside another's
    in_force = DedupPolicyResource(thresholds_file=uri).thresholds_in_force("model-a")
    assert in_force.thresholds.near_duplicate == pytest.approx(0.031)
    folder.put("state/thresholds.json", b"{not json")
    with pytest.raises(ValueError, match="is not a thresholds file"):
        read_calibrations(uri)

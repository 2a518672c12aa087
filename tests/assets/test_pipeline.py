"""Whole-graph runs on real components: Dagster, LanceDB in tmp, the offline backbone, real files."""

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import ALL_ASSETS, DEDUP_JOB, build_definitions, model_id_for, resources_for
from imgdedup_pipeline.resources.lancedb import LanceDBResource

IDEALO = "idealo-imagededup"


def run_job(settings: Settings, instance: dg.DagsterInstance):
    return (
        build_definitions(settings)
        .resolve_job_def(DEDUP_JOB)
        .execute_in_process(instance=instance, raise_on_error=False)
    )


def materialization_metadata(result, asset_name: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset_name]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def load_evaluator(bench_data):
    spec = importlib.util.spec_from_file_location("bench_evaluate", bench_data.parent / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def idealo_run(bench_data, tmp_path_factory):
    """One real `materialize` of every asset on the shared idealo folder, then a second run."""
    out = tmp_path_factory.mktemp("idealo-out")
    # The benchmark folder is mostly copies by design; its duplicate-fraction gate would block it.
    settings = Settings(
        image_root=str(bench_data / IDEALO), out_dir=str(out), embedder="offline", max_duplicate_fraction=1.0
    )
    with dg.instance_for_test() as instance:
        first = dg.materialize(ALL_ASSETS, resources=resources_for(settings), instance=instance)
        second = run_job(settings, instance)
    return settings, first, second


def test_every_decodable_file_is_scored_and_corrupt_ones_rejected(idealo_run, bench_data):
    settings, first, _ = idealo_run
    assert first.success
    manifest = pd.read_csv(bench_data / IDEALO / "manifest.csv")
    decodable = set(manifest.loc[manifest["decodable"] == "yes", "path"])
    scores = pd.read_csv(f"{settings.out_dir}/uniqueness.csv")
    rejected = pd.read_csv(f"{settings.out_dir}/rejected.csv")

    assert set(scores["path"]) == decodable
    assert set(rejected["path"]) == set(manifest["path"]) - decodable
    assert rejected["reason"].notna().all() and (rejected["reason"] != "").all()
    assert scores["uniqueness"].between(0, 1).all()
    assert list(scores.columns[:5]) == ["path", "uniqueness", "label", "group_id", "duplicate_of"]


def test_accounting_invariant_holds(idealo_run, bench_data):
    settings, first, _ = idealo_run
    books = materialization_metadata(first, "clean_dataset")["accounting"]
    discovered = len(pd.read_csv(bench_data / IDEALO / "manifest.csv"))
    assert books["discovered"] == discovered
    assert books["clean"] + books["duplicates"] + books["rejected"] == discovered
    clean = pd.read_csv(f"{settings.out_dir}/clean.csv")
    duplicates = pd.read_csv(f"{settings.out_dir}/duplicates.csv")
    rejected = pd.read_csv(f"{settings.out_dir}/rejected.csv")
    every_file = list(clean["path"]) + list(duplicates["path"]) + list(rejected["path"])
    assert len(every_file) == len(set(every_file)) == discovered


def test_identical_copies_are_all_found(idealo_run):
    settings, _, _ = idealo_run
    scores = pd.read_csv(f"{settings.out_dir}/uniqueness.csv")
    clean = pd.read_csv(f"{settings.out_dir}/clean.csv")
    removed = set(scores.loc[scores["removed"], "path"])
    catalog_file = next((Path(settings.out_dir) / "state").glob("catalog-*.parquet"))
    copies = pd.read_parquet(catalog_file).groupby("pixel_hash")["path"].apply(list)
    copies = copies[copies.map(len) > 1]
    assert len(copies) >= 3  # the folder plants byte-identical copies across sub-folders
    by_path = scores.set_index("path")
    for paths in copies:
        kept = [p for p in paths if p not in removed]
        # At most one survives; none when the whole group is a near-duplicate of a better keeper.
        assert len(kept) <= 1, f"identical group {paths} kept {kept}"
        assert by_path.loc[paths, "group_id"].nunique() == 1 and by_path.loc[paths, "group_id"].notna().all()
        assert by_path.loc[paths, "uniqueness"].eq(0.0).sum() == len(paths) - 1
    assert clean["pixel_hash"].is_unique


def test_the_turned_copies_with_black_corners_join_their_original(idealo_run):
    """idealo's ~30° rotations on their own canvas (black corners) embed at uniqueness ~0.18 and
    are ~27 pHash bits away; the turned-copy check (core/rotated_copies.py) proves them."""
    settings, first, _ = idealo_run
    scores = pd.read_csv(f"{settings.out_dir}/uniqueness.csv").set_index("path")
    turned = [
        "tests/data/mixed_images/ukbench00120_rotation.jpg",
        "tests/data/mixed_nested_images/lvl1/lvl2a/ukbench00120_rotation.jpg",
    ]
    original = "tests/data/base_images/ukbench00120.jpg"
    assert scores.loc[turned, "group_id"].eq(scores.loc[original, "group_id"]).all()
    assert scores.loc[turned, "removed"].all()
    assert "rotated_copy" in materialization_metadata(first, "uniqueness_scores")["neighbor_search"]


def test_evaluation_script_finds_no_missing_images(idealo_run, bench_data):
    settings, _, _ = idealo_run
    evaluator = load_evaluator(bench_data)
    groups = json.loads((bench_data / IDEALO / "groups.json").read_text())
    report = evaluator.evaluate(evaluator.load_predictions(f"{settings.out_dir}/uniqueness.csv"), groups)
    assert report["images_missing"] == 0
    assert report["pair_precision"] == 1.0 and report["singletons_removed"] == 0


def test_rerun_reuses_vectors_and_gives_the_same_scores(idealo_run):
    settings, first, second = idealo_run
    assert second.success
    assert materialization_metadata(first, "image_embeddings")["embedded_this_run"] > 0
    assert materialization_metadata(second, "image_embeddings")["embedded_this_run"] == 0
    vectors_first = materialization_metadata(first, "image_vectors")
    vectors_second = materialization_metadata(second, "image_vectors")
    assert vectors_second["dagster/row_count"] == vectors_first["dagster/row_count"]  # no duplicated rows
    assert vectors_second["lancedb/table_version"] == vectors_first["lancedb/table_version"]  # nothing written

    table = LanceDBResource(uri=settings.vector_store_uri).open_vectors(vectors_first["model_id"]).to_arrow()
    assert table.num_rows == len(set(table.column("pixel_hash").to_pylist()))
    assert set(table.column("model_id").to_pylist()) == {vectors_first["model_id"]}


def _write_images(folder, count=6, size=48):
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    shutil.copy(folder / "img0.png", folder / "img0_copy.png")


def test_hf_backend_runs_the_whole_graph_and_models_never_share_a_table(tmp_path, tiny_vit_dir):
    images = tmp_path / "images"
    _write_images(images)
    # A random tiny ViT finds everything similar: the duplicate-fraction gate is not under test here.
    hf = Settings(
        image_root=str(images),
        out_dir=str(tmp_path / "out"),
        embedder="hf",
        model=str(tiny_vit_dir),
        max_duplicate_fraction=1.0,
    )
    with dg.instance_for_test() as instance:
        first = run_job(hf, instance)
        second = run_job(dataclasses.replace(hf, embedder="offline", model=None), instance)
        assert first.success and second.success
        messages = [record.user_message for record in instance.all_logs(second.run_id)]
        first_messages = [record.user_message for record in instance.all_logs(first.run_id)]
    assert any(m.startswith("model changed to ") for m in messages)  # the switch is said in the logs
    assert not any(m.startswith("model changed to ") for m in first_messages)
    lancedb = LanceDBResource(uri=hf.vector_store_uri)
    names = lancedb.connect().table_names()
    assert len(names) == 2
    for name in names:
        models = set(lancedb.connect().open_table(name).to_arrow().column("model_id").to_pylist())
        assert len(models) == 1
    scores = pd.read_csv(tmp_path / "out" / "uniqueness.csv").set_index("path")
    assert sorted(scores.loc[["img0.png", "img0_copy.png"], "uniqueness"] == 0.0) == [False, True]


def test_index_search_gives_the_exact_labels_and_groups(idealo_run, tmp_path):
    """neighbor_search=index through the whole graph (the index path of the scoring stage and of
    the clean-set check), reusing the exact run's vector table: same labels, groups and keepers."""
    settings, first, _ = idealo_run
    indexed = dataclasses.replace(
        settings, out_dir=str(tmp_path / "out"), lancedb_uri=settings.vector_store_uri, neighbor_search="index"
    )
    with dg.instance_for_test() as instance:
        result = run_job(indexed, instance)
    assert result.success
    metadata = materialization_metadata(result, "uniqueness_scores")
    assert set(metadata["neighbor_search"]) == {"embedding", "hash", "rotated_copy"}
    # The setting picks the embedding search; the pHash matches (within the cutoff) take the cheaper
    # of their two exact searches: the plain scan at this size.
    assert metadata["neighbor_search"]["embedding"].startswith("index")
    assert metadata["neighbor_search"]["hash"].startswith("full")
    assert materialization_metadata(result, "image_embeddings")["embedded_this_run"] == 0
    exact = pd.read_csv(Path(settings.out_dir) / "uniqueness.csv").set_index("path").sort_index()
    index = pd.read_csv(Path(indexed.out_dir) / "uniqueness.csv").set_index("path").sort_index()
    pd.testing.assert_series_equal(index["label"], exact["label"])
    pd.testing.assert_series_equal(index["group_id"], exact["group_id"])
    pd.testing.assert_series_equal(index["duplicate_of"], exact["duplicate_of"])
    # Scores can only be overstated (a neighbour the embedding index missed).
    assert (index["uniqueness"] >= exact["uniqueness"] - 1e-6).all()
    duplicates = exact["label"] != "unique"
    np.testing.assert_allclose(index.loc[duplicates, "uniqueness"], exact.loc[duplicates, "uniqueness"], atol=1e-6)


def test_the_runtime_that_embedded_is_in_the_run_metadata(idealo_run):
    settings, first, second = idealo_run
    # auto on the CPU at fp32: a CPU runtime, exported once into OUT/state/exported-models.
    runtime = materialization_metadata(first, "image_embeddings")["runtime"]
    assert runtime.split()[0] in ("openvino", "onnxruntime"), runtime
    assert (Path(settings.out_dir) / "state" / "exported-models" / runtime.split()[0]).is_dir()
    # The rerun embeds nothing, so it loads no model at all.
    assert "not loaded" in materialization_metadata(second, "image_embeddings")["runtime"]


def test_the_embedding_model_config_alone_decides_the_model_id(tmp_path, tiny_vit_dir):
    """A launchpad change of `embedding_model` (here its pooling) runs as is: the policy holds no
    model id of its own to contradict it, and the run's vectors carry the new id."""
    images = tmp_path / "images"
    _write_images(images)
    settings = Settings(
        image_root=str(images),
        out_dir=str(tmp_path / "out"),
        embedder="hf",
        model=str(tiny_vit_dir),
        max_duplicate_fraction=1.0,
    )
    job = build_definitions(settings).resolve_job_def(DEDUP_JOB)
    launchpad = {
        "resources": {"embedding_model": {"config": {"backend": "hf", "model": str(tiny_vit_dir), "pooling": "mean"}}}
    }
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=launchpad)
    assert result.success, [event.step_failure_data.error.message for event in result.get_step_failure_events()]
    manifest = json.loads((tmp_path / "out" / "state" / "vectors.json").read_text())
    assert manifest["model_id"].endswith("#mean") and manifest["model_id"] != model_id_for(settings)

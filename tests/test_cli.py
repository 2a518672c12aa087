"""The `imgdedup` command-line contract: flags, output files and exit codes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.synthetic_images import write_noise_png

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def imgdedup(*args, dagster_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run(
        [sys.executable, "-m", "imgdedup_pipeline.cli", *map(str, args)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    images, out, home = base / "images", base / "out", base / "dagster_home"
    (images / "nested").mkdir(parents=True)
    home.mkdir()
    from skimage import data

    for index, name in enumerate(["chelsea", "coffee", "rocket", "astronaut"]):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((96, 64)).save(images / f"photo{index}.png")
    shutil.copy(images / "photo1.png", images / "nested" / "photo1_copy.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    completed = imgdedup("run", "--images", images, "--out", out, "--embedder", "offline", dagster_home=home)
    return completed, images, out, home


def test_run_writes_the_four_exports_and_exits_zero(cli_run):
    completed, _, out, _ = cli_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("uniqueness.csv", "duplicates.csv", "clean.csv", "rejected.csv"):
        assert (out / name).is_file(), name
    duplicates = pd.read_csv(out / "duplicates.csv")
    assert duplicates["path"].tolist() == ["photo1.png"] or duplicates["path"].tolist() == ["nested/photo1_copy.png"]
    assert pd.read_csv(out / "rejected.csv")["path"].tolist() == ["broken.jpg"]
    assert len(pd.read_csv(out / "clean.csv")) == 4
    assert "uniqueness.csv" in completed.stdout


def test_the_run_is_recorded_in_the_dagster_instance(cli_run, monkeypatch):
    _, _, _, home = cli_run
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
    assert [run.tags.get("imgdedup/launched_from") for run in runs] == ["cli"]


def test_similar_lists_the_nearest_images(cli_run):
    _, _, out, home = cli_run
    completed = imgdedup("similar", "photo1.png", "--k", "2", "--out", out, dagster_home=home)
    assert completed.returncode == 0, completed.stderr
    header, *lines = completed.stdout.strip().splitlines()
    assert header.split() == ["distance", "path"]
    assert len(lines) == 2
    distance, path = lines[0].split()
    assert path == "nested/photo1_copy.png" and float(distance) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < float(lines[1].split()[0]) <= 1.0


def test_similar_takes_an_absolute_path_inside_the_image_root(cli_run):
    _, images, out, home = cli_run
    completed = imgdedup("similar", images / "nested" / "photo1_copy.png", "--k", "1", "--out", out, dagster_home=home)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[1].split()[1] == "photo1.png"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--embedder", "offline", "--near-duplicate-threshold", "1.5"], "duplicate < near_duplicate <= 1"),
        (["--embedder", "offline", "--keep-policy", "biggest"], "unknown keep policy"),
        (["--embedder", "offline", "--model", "x/y"], "--model applies to the hf embedder only"),
    ],
    ids=["threshold-out-of-range", "unknown-keep-policy", "offline-with-model"],
)
def test_bad_config_fails_fast_with_exit_2(cli_run, tmp_path, extra, message):
    _, images, _, home = cli_run
    completed = imgdedup("run", "--images", images, "--out", tmp_path / "out", *extra, dagster_home=home)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert not (tmp_path / "out").exists()


def test_missing_image_root_fails_fast(tmp_path):
    completed = imgdedup(
        "run", "--images", tmp_path / "nope", "--out", tmp_path / "out", "--embedder", "offline", dagster_home=tmp_path
    )
    assert completed.returncode == 2 and "does not exist" in completed.stderr


def test_precision_flag_is_parsed_into_the_settings(tmp_path):
    from imgdedup_pipeline.cli import build_parser, settings_from_args

    parser = build_parser()
    run = parser.parse_args(["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--precision", "bf16"])
    assert settings_from_args(run).precision == "bf16"
    default = parser.parse_args(["run", "--images", str(tmp_path), "--out", str(tmp_path / "out")])
    assert settings_from_args(default).precision == "fp32"
    assert (
        parser.parse_args(
            ["calibrate", "--images", str(tmp_path), "--out", str(tmp_path), "--precision", "bf16"]
        ).precision
        == "bf16"
    )


def test_neighbor_search_flag_and_environment_reach_the_policy(tmp_path, monkeypatch):
    from imgdedup_pipeline.cli import build_parser, settings_from_args
    from imgdedup_pipeline.core.settings import Settings, SettingsError
    from imgdedup_pipeline.definitions import resources_for

    parser = build_parser()
    run = parser.parse_args(
        ["run", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--neighbor-search", "index"]
    )
    assert resources_for(settings_from_args(run))["policy"].neighbor_search == "index"
    assert (
        settings_from_args(
            parser.parse_args(["run", "--images", str(tmp_path), "--out", str(tmp_path / "out")])
        ).neighbor_search
        == "auto"
    )
    assert Settings.from_env({"IMGDEDUP_NEIGHBOR_SEARCH": "exact"}).neighbor_search == "exact"
    with pytest.raises(
        SettingsError,
        match="unknown neighbor search 'nearest': use one of auto, exact, index .*IMGDEDUP_NEIGHBOR_SEARCH",
    ):
        Settings(image_root=str(tmp_path), neighbor_search="nearest")


def test_unknown_precision_fails_fast_with_exit_2(cli_run, tmp_path):
    _, images, _, home = cli_run
    completed = imgdedup(
        "run",
        "--images",
        images,
        "--out",
        tmp_path / "out",
        "--embedder",
        "offline",
        "--precision",
        "fp16",
        dagster_home=home,
    )
    assert completed.returncode == 2 and "invalid choice: 'fp16'" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_run_with_bf16_precision_uses_its_own_model_id(cli_run, tmp_path):
    import json

    _, images, _, home = cli_run
    out = tmp_path / "out"
    completed = imgdedup(
        "run", "--images", images, "--out", out, "--embedder", "offline", "--precision", "bf16", dagster_home=home
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    manifest = json.loads((out / "state" / "vectors.json").read_text())
    assert manifest["model_id"].endswith("@bf16")
    assert len(pd.read_csv(out / "clean.csv")) == 4 and len(pd.read_csv(out / "duplicates.csv")) == 1


@pytest.fixture()
def garbage_model_dir(tmp_path) -> Path:
    """A folder that looks like a model folder but holds garbage."""
    folder = tmp_path / "garbage-model"
    folder.mkdir()
    (folder / "config.json").write_text("this is not json")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    return folder


CONFIG_ERRORS = {
    # The hub is unreachable here and the default ViT is not cached: a configuration error.
    "default_model_offline": ([], {"HF_HUB_OFFLINE": "1"}, "Fix it with one of"),
    "missing_model_folder": (["--model", "/nonexistent/saved-vit"], {}, "no such directory"),
    "garbage_model_folder": (["--model", "GARBAGE"], {}, "is not a loadable model folder"),
    "batch_size_not_a_number": (
        ["--embedder", "offline"],
        {"IMGDEDUP_BATCH_SIZE": "abc"},
        "IMGDEDUP_BATCH_SIZE='abc' is not a whole number",
    ),
    "max_pixels_in_float_notation": (
        ["--embedder", "offline"],
        {"IMGDEDUP_MAX_PIXELS": "1e9"},
        "IMGDEDUP_MAX_PIXELS='1e9' is not a whole number",
    ),
    "hash_bits_fractional": (
        ["--embedder", "offline"],
        {"IMGDEDUP_HASH_THRESHOLD_BITS": "1.5"},
        "IMGDEDUP_HASH_THRESHOLD_BITS='1.5' is not a whole number",
    ),
    "unknown_device": (["--embedder", "offline"], {"IMGDEDUP_DEVICE": "nonsense"}, "unknown device 'nonsense'"),
    "unknown_executor": (["--embedder", "offline"], {"IMGDEDUP_EXECUTOR": "dask"}, "unknown executor 'dask'"),
    "celery_without_broker": (
        ["--embedder", "offline"],
        {"IMGDEDUP_EXECUTOR": "celery"},
        "set IMGDEDUP_CELERY_BROKER_URL",
    ),
    "unknown_runtime": (["--embedder", "offline"], {"IMGDEDUP_RUNTIME": "tensorrt"}, "unknown runtime 'tensorrt'"),
    "cpu_runtime_at_bf16": (
        ["--embedder", "offline", "--runtime", "openvino", "--precision", "bf16"],
        {},
        "runs fp32 on the CPU only",
    ),
    "schedule_not_cron": (
        ["--embedder", "offline"],
        {"IMGDEDUP_DEDUP_SCHEDULE_CRON": "nightly"},
        "'nightly' is not a 5-field cron string",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS), ids=list(CONFIG_ERRORS))
def test_configuration_errors_exit_2_in_one_line_before_any_work(case, garbage_model_dir, tmp_path):
    extra, environment, message = CONFIG_ERRORS[case]
    extra = [str(garbage_model_dir) if arg == "GARBAGE" else arg for arg in extra]
    images, out, home = tmp_path / "images", tmp_path / "out", tmp_path / "home"
    images.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMGDEDUP_")}
    env.update(environment, DAGSTER_HOME=str(home))
    completed = subprocess.run(
        [sys.executable, "-m", "imgdedup_pipeline.cli", "run", "--images", str(images), "--out", str(out), *extra],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr and completed.stderr.strip().count("\n") == 0, completed.stderr
    assert not out.exists() and not home.exists()  # nothing ran, nothing written


def test_similar_refuses_a_k_below_one(cli_run):
    _, images, out, home = cli_run
    completed = imgdedup("similar", "photo1.png", "--k", "-1", "--out", out, dagster_home=home)
    assert completed.returncode == 2 and "--k must be at least 1" in completed.stderr


# Prints, at exit, which of the libraries that only new contents or a redraw need were imported.
IMPORT_PROBE = """
import atexit, sys
atexit.register(lambda: print("imported:", *sorted(m for m in ("torch", "transformers", "openvino", "onnxruntime", "timm", "matplotlib") if m in sys.modules)))
from imgdedup_pipeline.cli import main
sys.exit(main())
"""


def test_a_rerun_with_nothing_changed_writes_the_same_exports_without_the_model_or_matplotlib(cli_run, tmp_path):
    """No content needs embedding, the scores and the clean set are unchanged: the vectors, the
    check's neighbour search and the histogram come from the vector table and the caches, so
    neither the model's runtime nor matplotlib is imported; every check still runs, and the
    exports are the same."""
    first, images, out, _ = cli_run
    assert first.returncode == 0, first.stderr[-3000:]
    exports = (
        "uniqueness.csv",
        "duplicates.csv",
        "clean.csv",
        "rejected.csv",
        "training_manifest.csv",
        "uniqueness_histogram.png",
    )
    before = {name: (out / name).read_bytes() for name in exports}
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [
        sys.executable,
        "-c",
        IMPORT_PROBE,
        "run",
        "--images",
        str(images),
        "--out",
        str(out),
        "--embedder",
        "offline",
    ]
    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.splitlines()[-1] == "imported:"
    assert "checks: 8 passed, 0 failed" in rerun.stdout
    assert {name: (out / name).read_bytes() for name in exports} == before


def test_main_gives_an_in_process_caller_its_collector_settings_back(tmp_path):
    """The command tunes Python's garbage collector while it runs (`cli.GC_THRESHOLDS`); a caller
    in the same process (tests, a notebook) gets its own thresholds back, also after an error."""
    import gc

    from imgdedup_pipeline import cli

    before = gc.get_threshold()
    assert cli.main(["similar", "photo.png", "--k", "0", "--out", str(tmp_path)]) == cli.EXIT_CONFIG
    assert cli.main(["similar", "photo.png", "--out", str(tmp_path)]) == cli.EXIT_CONFIG
    assert gc.get_threshold() == before


def test_a_shared_storage_that_is_not_object_storage_fails_fast_with_exit_2(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    monkeypatch.setenv("IMGDEDUP_SHARED_STORAGE_URI", "/mnt/nfs/imgdedup")
    completed = imgdedup(
        "run",
        "--images",
        tmp_path / "images",
        "--out",
        tmp_path / "out",
        "--embedder",
        "offline",
        dagster_home=tmp_path,
    )
    assert completed.returncode == 2
    assert "shared storage '/mnt/nfs/imgdedup' is not an object-storage URI" in completed.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_calibration_the_sample_cannot_give_fails_in_one_line_without_a_stack_trace(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):  # fewer distinct images than a calibration needs
        write_noise_png(images / f"{seed}.png", seed=seed, size=(64, 48))
    completed = imgdedup(
        "calibrate",
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
        "--embedder",
        "offline",
        dagster_home=tmp_path / "home",
    )
    assert completed.returncode == 1
    last_lines = completed.stderr.strip().splitlines()[-2:]
    assert last_lines[0].startswith("FAILED step embedding_thresholds: CalibrationError")
    assert "at least 4 distinct images, got 3" in last_lines[0]
    assert last_lines[1] == "(rerun with --verbose for the traceback)"
    assert "Stack Trace" not in completed.stderr and "Traceback" not in completed.stderr

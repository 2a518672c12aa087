"""IMGDEDUP_EXECUTOR picks every job's executor in definitions.py, and nothing else does."""

import subprocess

import dagster as dg
import pytest
from distributed_support import PROJECT_ROOT, VENV_BIN, process_env
from PIL import Image

from imgdedup_pipeline.core.settings import Settings, SettingsError
from imgdedup_pipeline.definitions import DEDUP_JOB, SHARDED_EMBEDDING_JOB, build_definitions

BROKER = "sqla+postgresql+psycopg2://postgres@/imgdedup?host=/run/postgresql"
BACKEND = "db+postgresql+psycopg2://postgres@/imgdedup?host=/run/postgresql"
CLI_TIMEOUT_S = 300


@pytest.mark.parametrize(
    ("environment", "executor_name"),
    [
        ({}, "in_process_by_default"),
        ({"IMGDEDUP_EXECUTOR": "multiprocess"}, "multiprocess_by_default"),
        (
            {
                "IMGDEDUP_EXECUTOR": "celery",
                "IMGDEDUP_CELERY_BROKER_URL": BROKER,
                "IMGDEDUP_CELERY_BACKEND_URL": BACKEND,
            },
            "celery",
        ),
    ],
    ids=["default", "multiprocess", "celery"],
)
def test_the_executor_setting_applies_to_every_job(environment, executor_name, tmp_path):
    settings = Settings.from_env(environment)
    definitions = build_definitions(settings)
    for job in (DEDUP_JOB, SHARDED_EMBEDDING_JOB):
        assert definitions.resolve_job_def(job).executor_def.name == executor_name


def test_the_celery_executor_gets_the_configured_urls():
    settings = Settings(executor="celery", celery_broker_url=BROKER, celery_backend_url=BACKEND)
    job = build_definitions(settings).resolve_job_def(DEDUP_JOB)
    config = dg.validate_run_config(job, {})["execution"]["celery"]
    assert config["broker"] == BROKER and config["backend"] == BACKEND


def test_an_unknown_executor_is_refused_naming_the_choices():
    with pytest.raises(SettingsError, match="unknown executor 'ray': use one of in_process, multiprocess, celery"):
        Settings.from_env({"IMGDEDUP_EXECUTOR": "ray"})


def test_celery_without_a_broker_stops_the_definitions():
    settings = Settings(executor="celery")
    assert any("IMGDEDUP_CELERY_BROKER_URL" in problem for problem in settings.problems(check_paths=False))
    with pytest.raises(SettingsError, match="IMGDEDUP_CELERY_BROKER_URL"):
        build_definitions(settings)


def test_in_process_default_still_accepts_multiprocess_run_config():
    job = build_definitions(Settings()).resolve_job_def(DEDUP_JOB)
    assert job.executor_def.config_schema.as_field().default_value == {"in_process": {}}
    assert dg.validate_run_config(job, {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}})


def test_an_unreachable_broker_fails_the_run_naming_it(tmp_path):
    # An operator's typo or a database that is down: the run must fail and say where it tried,
    # not wait forever for a worker.
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), "red").save(images / "a.png")
    socket_dir = tmp_path / "no-postgres-here"
    settings = Settings(
        image_root=str(images),
        out_dir=str(tmp_path / "out"),
        embedder="offline",
        executor="celery",
        celery_broker_url=f"sqla+postgresql+psycopg2://postgres@/imgdedup?host={socket_dir}",
        celery_backend_url=f"db+postgresql+psycopg2://postgres@/imgdedup?host={socket_dir}",
    )
    env = process_env(settings, {"DAGSTER_HOME": str(tmp_path / "home")})
    (tmp_path / "home").mkdir()
    completed = subprocess.run(
        [str(VENV_BIN / "dagster"), "job", "execute", "-m", "imgdedup_pipeline.definitions", "-j", DEDUP_JOB],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output[-3000:]
    assert "RUN_FAILURE" in output
    assert f'connection to server on socket "{socket_dir}/.s.PGSQL.5432" failed' in output, output[-3000:]

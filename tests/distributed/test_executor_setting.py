"""IMGDEDUP_EXECUTOR picks every job's executor in definitions.py, and nothing else does."""
import dagster as dg
import pytest

from core.settings import Settings, SettingsError
from definitions import DEDUP_JOB, SHARDED_EMBEDDING_JOB, build_definitions

BROKER = "sqla+postgresql+psycopg2://postgres@/imgdedup?host=/run/postgresql"
BACKEND = "db+postgresql+psycopg2://postgres@/imgdedup?host=/run/postgresql"


@pytest.mark.parametrize(
    ("environment", "executor_name"),
    [({}, "in_process_by_default"), ({"IMGDEDUP_EXECUTOR": "multiprocess"}, "multiprocess_by_default"),
     ({"IMGDEDUP_EXECUTOR": "celery", "IMGDEDUP_CELERY_BROKER_URL": BROKER, "IMGDEDUP_CELERY_BACKEND_URL": BACKEND}, "celery")],
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


@pytest.mark.parametrize(
    ("settings", "message"),
    [(Settings(executor="ray"), "unknown executor 'ray'"), (Settings(executor="celery"), "IMGDEDUP_CELERY_BROKER_URL")],
    ids=["unknown", "celery-without-broker"],
)
def test_a_bad_executor_setting_stops_the_definitions(settings, message):
    assert any(message in problem for problem in settings.problems(check_paths=False))
    with pytest.raises(SettingsError, match=message):
        build_definitions(settings)


def test_in_process_default_still_accepts_multiprocess_run_config():
    job = build_definitions(Settings()).resolve_job_def(DEDUP_JOB)
    assert job.executor_def.config_schema.as_field().default_value == {"in_process": {}}
    assert dg.validate_run_config(job, {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}})

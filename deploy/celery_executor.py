"""Example only (not imported by the project): the dedup job on the Celery executor.

Copy into `definitions.py`'s `build_definitions` when the deployment runs Celery workers:

    from dagster_celery import celery_executor
    dedup_job = dg.define_asset_job(DEDUP_JOB, selection=dg.AssetSelection.assets(*ALL_ASSETS), executor_def=celery_executor)
"""

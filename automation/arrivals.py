"""Incremental dedup of newly arrived images: a sensor (on arrival) and a nightly schedule.

Both request a run of the dedup job for a listing of the image root that no run has handled yet.
The listing fingerprint (paths, sizes, mtimes) is the cursor and the run's tag, so the same state
of the folder is never processed twice, and any change (new, changed or removed file) is picked up.
The run itself only decodes changed files and embeds new content (catalog and vector reuse).
"""

import dagster as dg

from imgdedup_pipeline.core.catalog import listing_fingerprint
from imgdedup_pipeline.resources.image_store import ImageStoreResource

LISTING_TAG = "imgdedup/listing"
TRIGGER_TAG = "imgdedup/trigger"


def _already_handled(instance: dg.DagsterInstance, fingerprint: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={LISTING_TAG: fingerprint}), limit=1))


def _run_request(fingerprint: str, trigger: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"listing-{fingerprint}", tags={LISTING_TAG: fingerprint, TRIGGER_TAG: trigger})


def build_arrival_automation(
    job_name: str, cron_schedule: str = "0 2 * * *"
) -> tuple[dg.SensorDefinition, dg.ScheduleDefinition]:
    """The arrival sensor and the catch-up schedule (`cron_schedule`, nightly at 02:00 by default)
    for `job_name`."""

    @dg.sensor(job_name=job_name, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
    def new_images_sensor(context: dg.SensorEvaluationContext, image_store: ImageStoreResource):
        """Requests a dedup run when files under the image root were added, changed or removed."""
        fingerprint = listing_fingerprint(image_store.root, image_store.discover())
        if fingerprint == context.cursor or _already_handled(context.instance, fingerprint):
            context.update_cursor(fingerprint)
            return dg.SkipReason("no file was added, changed or removed since the last run")
        context.update_cursor(fingerprint)
        return _run_request(fingerprint, "sensor")

    @dg.schedule(job_name=job_name, cron_schedule=cron_schedule, default_status=dg.DefaultScheduleStatus.STOPPED)
    def nightly_dedup_schedule(context: dg.ScheduleEvaluationContext, image_store: ImageStoreResource):
        """Nightly catch-up run, skipped when a run already handled the current listing."""
        fingerprint = listing_fingerprint(image_store.root, image_store.discover())
        if _already_handled(context.instance, fingerprint):
            return dg.SkipReason("the current listing was already deduplicated")
        return _run_request(fingerprint, "schedule")

    return new_images_sensor, nightly_dedup_schedule

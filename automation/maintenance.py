"""Vector-table maintenance: compaction and cleanup as their own scheduled job."""

import dagster as dg

from imgdedup_pipeline.resources.lancedb import WRITER_POOL, LanceDBResource


@dg.op(pool=WRITER_POOL)
def optimize_vector_tables(context: dg.OpExecutionContext, lancedb: LanceDBResource) -> None:
    """Compact small fragments left by incremental inserts and prune old table versions."""
    db = lancedb.connect()
    for name in db.table_names():
        table = db.open_table(name)
        before = table.version
        table.optimize()
        context.log.info(f"optimized {name}: version {before} -> {table.version}, {table.count_rows()} rows")


@dg.job(description="Compact the LanceDB vector tables (run weekly, or after many small batches).")
def vector_table_maintenance():
    optimize_vector_tables()


weekly_vector_table_maintenance = dg.ScheduleDefinition(
    job=vector_table_maintenance, cron_schedule="0 3 * * 0", default_status=dg.DefaultScheduleStatus.STOPPED
)

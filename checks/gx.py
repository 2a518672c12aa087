"""Great Expectations (GX Core 1.x) on pandas tables, reported as Dagster asset check results.

GX is imported inside the functions, never at module import: it takes seconds to import and the
code location must load fast. Every validation runs in its own ephemeral context, so nothing is
written to disk and no state is shared between checks or runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

DEFAULT_SAMPLE_SIZE = 10
# Keys of an expectation's configuration that say *what* is checked, not the threshold.
_NON_THRESHOLD_KWARGS = ("batch_id", "column", "column_A", "column_B", "column_list", "result_format")


def gx_expectations():
    """The `great_expectations.expectations` module, imported on first use with analytics off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


@dataclass(frozen=True)
class ExpectationOutcome:
    """What one expectation found, as plain values.

    Attributes:
        label: `expectation_type(column)`, e.g. `expect_column_values_to_be_unique(image_id)`.
        success: whether the expectation held.
        observed_value: GX's `observed_value` for aggregate expectations; for column-map
            expectations (no observed value) the number of unexpected rows.
        threshold: the expectation's bounds (`min_value`, `max_value`, `value_set`, ...); empty for
            expectations without one (uniqueness, not-null).
        unexpected_count: rows that broke a column-map expectation; None for aggregates.
        element_count: rows the expectation looked at; None for aggregates.
        unexpected_sample: up to `sample_size` unexpected rows, each {column: value} holding the
            checked column(s) and the id columns.
    """

    label: str
    success: bool
    observed_value: object
    threshold: dict
    unexpected_count: int | None = None
    element_count: int | None = None
    unexpected_sample: list[dict] = field(default_factory=list)


def validate_table(
    table: pd.DataFrame,
    expectations: Sequence,
    *,
    suite_name: str,
    id_columns: Iterable[str] = (),
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> list[ExpectationOutcome]:
    """Validate `table` against `expectations` in an ephemeral GX context.

    Args:
        table: the DataFrame to validate (not modified).
        expectations: GX expectation instances (build them with `gx_expectations()`).
        suite_name: name of the expectation suite (shows up in GX's own results).
        id_columns: columns added to every unexpected row so a person can find it (e.g. `path`).
        sample_size: unexpected rows kept per expectation.

    Returns:
        One `ExpectationOutcome` per expectation, in the order given.

    Raises:
        RuntimeError: an expectation could not be evaluated (e.g. a missing column); that is a bug
            in the check or the table, not a failed check.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX pins this module's logger to INFO at import, which logs a line per ephemeral context:
    # quiet it while the context is made, and give GX its own setting back.
    chatty = logging.getLogger("great_expectations.data_context.types.base")
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        context = gx.get_context(mode="ephemeral")
    finally:
        chatty.setLevel(level)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas(f"{suite_name}_source")
        .add_dataframe_asset(f"{suite_name}_table")
        .add_batch_definition_whole_dataframe("whole_table")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": table})
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=list(expectations)))
    id_columns = [c for c in id_columns if c in table.columns]
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": sample_size}
    if id_columns:
        result_format["unexpected_index_column_names"] = id_columns
    validation = batch.validate(suite, result_format=result_format)
    return [_outcome(r, sample_size) for r in validation.results]


def _outcome(result, sample_size: int) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    _raise_if_errored(result, config.type, kwargs)
    columns = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k) is not None]
    label = f"{config.type}({', '.join(columns)})" if columns else config.type
    threshold = {k: _plain(v) for k, v in kwargs.items() if k not in _NON_THRESHOLD_KWARGS and v is not None}
    details = result.result or {}
    unexpected_count = details.get("unexpected_count")
    if "observed_value" in details:
        observed = _plain(details["observed_value"])
    else:
        observed = int(unexpected_count) if unexpected_count is not None else None
    sample = details.get("partial_unexpected_index_list") or [
        {"value": v} for v in details.get("partial_unexpected_list") or []
    ]
    return ExpectationOutcome(
        label=label,
        success=bool(result.success),
        observed_value=observed,
        threshold=threshold,
        unexpected_count=int(unexpected_count) if unexpected_count is not None else None,
        element_count=int(details["element_count"]) if details.get("element_count") is not None else None,
        unexpected_sample=[{k: _plain(v) for k, v in row.items()} for row in sample[:sample_size]],
    )


def _raise_if_errored(result, expectation_type: str, kwargs: dict) -> None:
    info = result.exception_info or {}
    # GX 1.x reports either one {raised_exception, exception_message} dict or one per metric.
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    errors = [e.get("exception_message") or "unknown error" for e in entries if e.get("raised_exception")]
    if errors:
        raise RuntimeError(f"{expectation_type} {kwargs} could not be evaluated: {'; '.join(errors)}")


def _plain(value):
    """A JSON-friendly version of a GX / numpy / pandas value (NaN -> None)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            value = str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def check_result_from_outcomes(
    outcomes: Sequence[ExpectationOutcome], extra_metadata: dict | None = None, description: str | None = None
) -> dg.AssetCheckResult:
    """Translate expectation outcomes into one `AssetCheckResult` (passed = every expectation held).

    Metadata: `observed_value`, `threshold` and `unexpected_count` (for a single expectation the
    plain values, for several a JSON object keyed by expectation label; null where there is none),
    `failed_expectations`, an `expectations` markdown table and, when rows broke an expectation,
    `unexpected_sample`. Without a `description`, a failed result says which expectations failed
    and what they observed.
    """
    if not outcomes:
        raise ValueError("no expectation outcomes to report; a check must validate at least one expectation")
    single = len(outcomes) == 1
    counts = [o.unexpected_count for o in outcomes if o.unexpected_count is not None]
    metadata = {
        "observed_value": _metadata_value(
            outcomes[0].observed_value if single else {o.label: o.observed_value for o in outcomes}
        ),
        "threshold": _metadata_value(
            (outcomes[0].threshold if single else {o.label: o.threshold for o in outcomes if o.threshold}) or None
        ),
        "unexpected_count": dg.MetadataValue.int(sum(counts)) if counts else dg.MetadataValue.null(),
        "failed_expectations": dg.MetadataValue.json([o.label for o in outcomes if not o.success]),
        "expectations": dg.MetadataValue.md(_expectations_markdown(outcomes)),
    }
    samples = [{"expectation": o.label, **row} for o in outcomes if not o.success for row in o.unexpected_sample]
    if samples:
        metadata["unexpected_sample"] = dg.MetadataValue.md(pd.DataFrame(samples).to_markdown(index=False))
    metadata.update(extra_metadata or {})
    failed = [o for o in outcomes if not o.success]
    if description is None and failed:
        description = "; ".join(
            f"{o.label} failed: observed {json.dumps(o.observed_value, default=str)}"
            + (f", expected {json.dumps(o.threshold, default=str)}" if o.threshold else "")
            for o in failed
        )
    return dg.AssetCheckResult(passed=not failed, metadata=metadata, description=description)


def _metadata_value(value) -> dg.MetadataValue:
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.json(value)


def _expectations_markdown(outcomes: Sequence[ExpectationOutcome]) -> str:
    rows = [
        {
            "expectation": o.label,
            "passed": o.success,
            "observed": json.dumps(o.observed_value, default=str),
            "threshold": json.dumps(o.threshold, default=str) if o.threshold else "",
            "unexpected": "" if o.unexpected_count is None else f"{o.unexpected_count} of {o.element_count}",
        }
        for o in outcomes
    ]
    return pd.DataFrame(rows).to_markdown(index=False)


def run_expectations(
    table: pd.DataFrame,
    expectations: Sequence,
    *,
    suite_name: str,
    id_columns: Iterable[str] = (),
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    extra_metadata: dict | None = None,
    description: str | None = None,
) -> dg.AssetCheckResult:
    """`validate_table` then `check_result_from_outcomes`: the one call a check function makes."""
    outcomes = validate_table(
        table, expectations, suite_name=suite_name, id_columns=id_columns, sample_size=sample_size
    )
    return check_result_from_outcomes(outcomes, extra_metadata=extra_metadata, description=description)

"""What a failed gate tells a person, wherever they look: which check failed, the observed value
against the limit, what was held back, and the setting that changes the limit.

The check results carry it as metadata (`held_back`, `limit_setting`), which the CLI prints; the
step then fails with the same text, so the Dagster run's failure says it too, not only the check's
page.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from imgdedup_pipeline.core.settings import cli_flag, env_var

# Held back by a failed check on each asset (SPEC.md, "Checks that gate training").
HELD_BACK = {
    "uniqueness_scores": "everything downstream of the scores (duplicate_groups, duplicates_collection, clean_dataset, training_manifest) and their exports",
    "clean_dataset": "training_manifest (training); the dedup results and exports are written",
}
# Check name -> the policy field (a `Settings` field) whose value is the check's limit.
LIMIT_SETTINGS = {
    "clean_dataset_duplicate_fraction": "max_duplicate_fraction",
    "clean_dataset_no_duplicate_pairs": "duplicate_threshold",
}


def limit_setting_text(check_name: str) -> str | None:
    """Every way to change the limit of `check_name`: flag, environment variable and the resource
    config key of the UI's launchpad; None for checks without a configurable limit."""
    if check_name not in LIMIT_SETTINGS:
        return None
    field = LIMIT_SETTINGS[check_name]
    return f"{cli_flag(field)} (environment {env_var(field)}; UI launchpad: resources.policy.config.{field})"


def with_gate_metadata(result: dg.AssetCheckResult, check_name: str, asset: str) -> dg.AssetCheckResult:
    """`result` as the named check of `asset`, with `held_back` and `limit_setting` when it failed."""
    metadata = dict(result.metadata or {})
    if not result.passed:
        metadata["held_back"] = dg.MetadataValue.text(HELD_BACK[asset])
        if (setting := limit_setting_text(check_name)) is not None:
            metadata["limit_setting"] = dg.MetadataValue.text(setting)
    return dg.AssetCheckResult(
        check_name=check_name, asset_key=asset, passed=result.passed, metadata=metadata, description=result.description
    )


def gate_failure_message(results: Sequence[dg.AssetCheckResult]) -> str | None:
    """One paragraph per failed check (None when all passed), for the run's failure."""
    lines = []
    for result in results:
        if result.passed:
            continue
        metadata = result.metadata or {}
        lines.append(f"check {result.check_name} failed: {result.description or 'see the check for details'}")
        if "held_back" in metadata:
            lines.append(f"  held back: {metadata['held_back'].value}")
        if "limit_setting" in metadata:
            lines.append(f"  to change the limit: {metadata['limit_setting'].value}")
    return "\n".join(lines) or None


def raise_if_any_failed(results: Sequence[dg.AssetCheckResult]) -> None:
    """Fail the check step with `gate_failure_message` after the results were reported, so that
    what is downstream is held back and the run's failure explains why.

    Raises:
        dagster.Failure: at least one result did not pass.
    """
    message = gate_failure_message(results)
    if message is not None:
        raise dg.Failure(description=message, allow_retries=False)

"""Checks on `uniqueness_scores`: one row per image, no nulls, scores in [0, 1], N-1 zeros per
identical group (SPEC.md "Checks that gate training")."""

import dagster as dg
import pandas as pd

from imgdedup_pipeline.checks.gates import raise_if_any_failed, with_gate_metadata
from imgdedup_pipeline.checks.gx import gx_expectations, run_expectations
from imgdedup_pipeline.checks.invariants import identical_group_zero_counts

REQUIRED_COLUMNS = ("image_id", "path", "identical_group", "uniqueness", "label")
ID_COLUMNS = ("image_id", "path")


def one_row_per_image_suite() -> list:
    gxe = gx_expectations()
    return [gxe.ExpectColumnValuesToBeUnique(column="image_id")]


def no_nulls_suite() -> list:
    gxe = gx_expectations()
    return [gxe.ExpectColumnValuesToNotBeNull(column=column) for column in REQUIRED_COLUMNS]


def score_range_suite() -> list:
    """The score's definition (not a tunable threshold): uniqueness lies in [0, 1]."""
    gxe = gx_expectations()
    return [gxe.ExpectColumnValuesToBeBetween(column="uniqueness", min_value=0.0, max_value=1.0)]


def identical_group_zeros_suite() -> list:
    """Run on `identical_group_zero_counts`: each group of N has exactly N-1 zeros and states N."""
    gxe = gx_expectations()
    return [
        gxe.ExpectColumnValuesToBeInSet(column="zeros_minus_expected", value_set=[0]),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="identical_group_size", column_B="rows"),
    ]


def uniqueness_scores_one_row_per_image(uniqueness_scores: pd.DataFrame) -> dg.AssetCheckResult:
    return run_expectations(
        uniqueness_scores,
        one_row_per_image_suite(),
        suite_name="uniqueness_scores_one_row_per_image",
        id_columns=ID_COLUMNS,
    )


def uniqueness_scores_no_nulls(uniqueness_scores: pd.DataFrame) -> dg.AssetCheckResult:
    return run_expectations(
        uniqueness_scores, no_nulls_suite(), suite_name="uniqueness_scores_no_nulls", id_columns=ID_COLUMNS
    )


def uniqueness_scores_in_range(uniqueness_scores: pd.DataFrame) -> dg.AssetCheckResult:
    return run_expectations(
        uniqueness_scores, score_range_suite(), suite_name="uniqueness_scores_in_range", id_columns=ID_COLUMNS
    )


def uniqueness_scores_identical_group_zeros(uniqueness_scores: pd.DataFrame) -> dg.AssetCheckResult:
    groups = identical_group_zero_counts(uniqueness_scores)
    return run_expectations(
        groups,
        identical_group_zeros_suite(),
        suite_name="uniqueness_scores_identical_group_zeros",
        id_columns=("identical_group", "rows", "zeros"),
        extra_metadata={
            "identical_groups": dg.MetadataValue.int(len(groups)),
            "groups_with_copies": dg.MetadataValue.int(int((groups["rows"] > 1).sum())),
        },
    )


# Check name -> (rule, description). Each is its own blocking check in the UI; they run in one
# step because they read the same table, and a step costs more than these expectations do.
RULES = {
    "uniqueness_scores_one_row_per_image": (uniqueness_scores_one_row_per_image, "Exactly one row per image id."),
    "uniqueness_scores_no_nulls": (
        uniqueness_scores_no_nulls,
        "No nulls in image_id, path, identical_group, uniqueness or label.",
    ),
    "uniqueness_scores_in_range": (uniqueness_scores_in_range, "Every uniqueness score lies in [0, 1]."),
    "uniqueness_scores_identical_group_zeros": (
        uniqueness_scores_identical_group_zeros,
        "Each identical group of N images has exactly N-1 scores of exactly 0.",
    ),
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset="uniqueness_scores", blocking=True, description=description)
        for name, (_, description) in RULES.items()
    ],
)
def uniqueness_scores_checks(uniqueness_scores: pd.DataFrame):
    named = [
        with_gate_metadata(rule(uniqueness_scores), name, "uniqueness_scores") for name, (rule, _) in RULES.items()
    ]
    yield from named
    raise_if_any_failed(named)


UNIQUENESS_SCORES_CHECKS = [uniqueness_scores_checks]

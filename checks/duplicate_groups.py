"""The raw-data gate on `duplicate_groups`: at most `max_duplicate_fraction` of the images may be
labelled duplicate or near-duplicate; more means something upstream is wrong (SPEC.md).

It sits on `duplicate_groups` rather than `uniqueness_scores` so that a failing gate still leaves
the uniqueness and duplicates exports written for a person to inspect, while the clean dataset and
everything after it are held back.
"""

import dagster as dg
import pandas as pd

from checks.gx import gx_expectations, run_expectations
from checks.invariants import duplicate_label_flags
from resources.policy import DedupPolicyResource

SAMPLE_SIZE = 10


def duplicate_fraction_suite(max_duplicate_fraction: float) -> list:
    """Run on `duplicate_label_flags`: the mean of the 0/1 flags is the duplicate fraction."""
    gxe = gx_expectations()
    return [gxe.ExpectColumnMeanToBeBetween(column="labelled_duplicate", min_value=0.0, max_value=max_duplicate_fraction)]


@dg.asset_check(
    asset="duplicate_groups",
    blocking=True,
    description="The fraction of images labelled duplicate or near_duplicate is at most the policy's max_duplicate_fraction.",
)
def duplicate_groups_duplicate_fraction(duplicate_groups: pd.DataFrame, policy: DedupPolicyResource) -> dg.AssetCheckResult:
    flags = duplicate_label_flags(duplicate_groups)
    flagged = flags[flags["labelled_duplicate"] == 1]
    counts = {
        "images": dg.MetadataValue.int(len(flags)),
        "labelled_duplicate_or_near": dg.MetadataValue.int(len(flagged)),
        "max_duplicate_fraction": dg.MetadataValue.float(policy.max_duplicate_fraction),
    }
    if flags.empty:
        # 0 of 0 images: no fraction exists, and no duplicates can be wrong.
        return dg.AssetCheckResult(passed=True, metadata={**counts, "observed_value": dg.MetadataValue.null()}, description="no images were scored")
    sample = flagged.sort_values("path").head(SAMPLE_SIZE)[["path", "label"]]
    if len(sample):
        counts["labelled_duplicate_sample"] = dg.MetadataValue.md(sample.to_markdown(index=False))
    return run_expectations(flags, duplicate_fraction_suite(policy.max_duplicate_fraction), suite_name="duplicate_groups_duplicate_fraction", extra_metadata=counts)


DUPLICATE_GROUPS_CHECKS = [duplicate_groups_duplicate_fraction]

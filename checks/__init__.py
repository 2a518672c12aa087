"""Asset checks (Great Expectations suites inside Dagster checks); one module per checked asset."""
from __future__ import annotations


def all_checks() -> list:
    return []

"""The collections a run produces: interchange export, Duplicates, clean dataset, accounting."""
from __future__ import annotations

import pandas as pd

INTERCHANGE_COLUMNS = ["path", "uniqueness", "label", "group_id", "duplicate_of"]


def interchange_table(scores: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """SPEC.md's export: one row per scored image, sorted ascending by uniqueness (then path).

    The first five columns are the interchange format (`path`, `uniqueness`, `label`, `group_id`,
    `duplicate_of`); the rest explain each row (relation, reason, group_keeper, nearest_path).
    """
    table = scores[["image_id", "path", "uniqueness", "label", "nearest_path", "identical_group_size"]].merge(
        groups[["image_id", "group_id", "duplicate_of", "group_keeper", "relation", "removed", "reason"]], on="image_id", how="left", validate="one_to_one"
    )
    extra = [c for c in table.columns if c not in INTERCHANGE_COLUMNS]
    return table[INTERCHANGE_COLUMNS + extra].sort_values(["uniqueness", "path"], ignore_index=True)


def duplicates_table(interchange: pd.DataFrame) -> pd.DataFrame:
    """The Duplicates collection: rows that are removed, each naming its keeper and the reason."""
    return interchange[interchange["removed"]].reset_index(drop=True)


def clean_table(raw_images: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Discovered, decodable images minus the removed ones, sorted by path."""
    removed = set(groups.loc[groups["removed"], "image_id"])
    return raw_images[~raw_images["image_id"].isin(removed)].sort_values("path", ignore_index=True)


def accounting(discovered: int, clean: int, duplicates: int, rejected: int) -> dict:
    """The invariant `clean + duplicates + rejected == discovered`, with its parts."""
    return {
        "discovered": discovered,
        "clean": clean,
        "duplicates": duplicates,
        "rejected": rejected,
        "balanced": clean + duplicates + rejected == discovered,
    }

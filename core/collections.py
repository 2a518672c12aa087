"""The collections a run produces: interchange export, Duplicates, clean dataset, accounting."""

from __future__ import annotations

import pandas as pd

INTERCHANGE_COLUMNS = ["path", "uniqueness", "label", "group_id", "duplicate_of"]
# Column of the embeddings table naming why a content has no vector: its files changed between
# the catalog and the embedding step (None for every embedded content).
CHANGED_COLUMN = "changed_during_run"
CHANGED_REASON = "changed_during_run"


def withdraw_changed_contents(
    raw_images: pd.DataFrame, rejected_images: pd.DataFrame, changed: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move the images whose content could not be embedded because their files changed during the
    run from the images to the rejected files (reason `changed_during_run`), so every discovered
    file stays in exactly one collection; the next run catalogues their new content.

    Args:
        raw_images: the catalogued images (columns image_id, path, bytes, pixel_hash, ...).
        rejected_images: the rejected files (REJECTED_COLUMNS).
        changed: pixel hash -> why it was not embedded.

    Returns:
        (images, rejected): new DataFrames; unchanged copies when `changed` is empty.
    """
    if not changed:
        return raw_images, rejected_images
    moved = raw_images["pixel_hash"].isin(changed.keys())
    withdrawn = raw_images.loc[moved, ["image_id", "path", "bytes"]].assign(
        reason=CHANGED_REASON, detail=raw_images.loc[moved, "pixel_hash"].map(changed).str.slice(0, 500)
    )
    rejected = pd.concat([rejected_images, withdrawn.astype({"bytes": "Int64"})], ignore_index=True).sort_values(
        "path", ignore_index=True
    )
    return raw_images[~moved].reset_index(drop=True), rejected


def interchange_table(scores: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """SPEC.md's export: one row per scored image, sorted ascending by uniqueness (then path).

    The first five columns are the interchange format (`path`, `uniqueness`, `label`, `group_id`,
    `duplicate_of`); the rest explain each row (relation, reason, group_keeper, nearest_path).
    """
    table = scores[["image_id", "path", "uniqueness", "label", "nearest_path", "identical_group_size"]].merge(
        groups[["image_id", "group_id", "duplicate_of", "group_keeper", "relation", "removed", "reason"]],
        on="image_id",
        how="left",
        validate="one_to_one",
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

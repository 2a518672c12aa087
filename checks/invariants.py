"""Tables the checks validate, derived from the asset tables with plain pandas / numpy.

No Dagster, LanceDB or Great Expectations here: each function takes DataFrames (and vectors) and
returns a new DataFrame in which every row must satisfy one simple expectation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imgdedup_pipeline.core.distances import to_uniqueness
from imgdedup_pipeline.core.search.contents import ContentVectors, find_content_neighbors
from imgdedup_pipeline.core.search.signals import HashSignal


def identical_group_zero_counts(scores: pd.DataFrame) -> pd.DataFrame:
    """Per identical group, how many images score exactly 0 against the N-1 that SPEC.md requires.

    Args:
        scores: the `uniqueness_scores` table (columns identical_group, identical_group_size,
            uniqueness).

    Returns:
        A new DataFrame, one row per identical group (singletons included, as groups of 1) sorted
        by group: identical_group, rows (images counted in the table = N), identical_group_size
        (the size the table states, its largest value within the group), zeros,
        zeros_minus_expected (`zeros - (N - 1)`, 0 when the rule holds).
    """
    grouped = scores.assign(_zero=scores["uniqueness"].eq(0.0)).groupby("identical_group", dropna=False, sort=True)
    table = grouped.agg(
        rows=("_zero", "size"), identical_group_size=("identical_group_size", "max"), zeros=("_zero", "sum")
    ).reset_index()
    table["rows"] = table["rows"].astype("int64")
    table["zeros"] = table["zeros"].astype("int64")
    table["zeros_minus_expected"] = table["zeros"] - (table["rows"] - 1)
    return table


def removal_flags(raw_images: pd.DataFrame, duplicates_collection: pd.DataFrame) -> pd.DataFrame:
    """Flag each decodable image the pipeline removes; the flags' mean is the removed fraction.

    Keepers are not removed, so two near-duplicate images give one flag of two (SPEC.md, "Checks
    that gate training"); images left for review (`near_duplicate_action=review`) are not removed.

    Args:
        raw_images: the decodable images (column path).
        duplicates_collection: the removed images (column path).

    Returns:
        A new DataFrame with columns path, removed (int64 0/1), sorted by path.
    """
    flags = pd.DataFrame({"path": raw_images["path"].astype(str)}).sort_values("path", ignore_index=True)
    flags["removed"] = flags["path"].isin(set(duplicates_collection["path"].astype(str))).astype("int64")
    return flags


def nearest_kept_contents(
    clean: pd.DataFrame,
    vectors: ContentVectors | dict[str, np.ndarray],
    hash_signal: HashSignal | None = None,
    near_duplicate_cosine_distance: float = 0.1,
    engine: str = "exact",
) -> pd.DataFrame:
    """For each distinct content in the clean set, its nearest other kept content.

    With a hash signal the distance is the pipeline's fused one (`find_content_neighbors`: min of
    cosine and the mapped pHash distance where the hash vouches for the pair: within its cutoff,
    both hashes informative), so a pair that is a duplicate by either signal is found.

    Identical copies share one vector (one per pixel hash), so this looks at pairs of *different*
    contents; copies with equal pixel hashes are a separate property.

    Args:
        clean: the `clean_dataset` table (columns path, pixel_hash).
        vectors: the kept contents' embeddings read back from the vector table (`ContentVectors`,
            used in place, or a mapping pixel hash -> embedding).
        hash_signal: the pHash signal fused into the distance, or None for embeddings only.
        near_duplicate_cosine_distance: where `hash_signal.threshold_bits` maps to.
        engine: `exact` (default), `index` or `auto`, as `core.search.contents.find_content_neighbors`.
            With the index the check is no longer exhaustive for embeddings: the embedding index
            finds nearly every pair (recall@1 0.996 at 1M; copies within the duplicate threshold
            share their list and codes), and a nearest distance may be overstated. The hash
            signal's matches are always found exactly.

    Returns:
        A new DataFrame, one row per distinct pixel hash sorted by path: pixel_hash, path (first
        path with that content), nearest_path, nearest_cosine_distance (float64 in [0, 2]) and
        nearest_uniqueness_distance (half of it, the uniqueness scale); the nearest columns are
        None / NaN when the clean set holds only one content.

    Raises:
        ValueError: a kept content has no vector, so the property cannot be verified.
    """
    contents = clean.sort_values("path").drop_duplicates("pixel_hash")[["pixel_hash", "path"]]
    if not isinstance(vectors, ContentVectors):
        vectors = ContentVectors.from_mapping({h: vectors[h] for h in contents["pixel_hash"] if h in vectors})
    # Rows in the vectors' (hash) order, so that their matrix is searched in place.
    contents = contents.set_index("pixel_hash").reindex(pd.Index(vectors.hashes, name="pixel_hash")).reset_index()
    missing = sorted(set(clean["pixel_hash"]) - set(contents["pixel_hash"]))
    if missing:
        raise ValueError(
            f"{len(missing)} kept contents have no vector in the vector table (e.g. {missing[:3]}); "
            "rematerialize image_embeddings and image_vectors before checking the clean dataset"
        )
    contents = contents[contents["path"].notna()]  # vectors of contents not in the clean set
    if len(contents) != len(vectors.hashes):
        keep = np.isin(vectors.hashes, contents["pixel_hash"].to_numpy())
        vectors = ContentVectors(vectors.hashes[keep], vectors.matrix[keep])
        contents = contents.reset_index(drop=True)
    if contents.empty:
        return contents.assign(
            nearest_path=pd.Series(dtype=object),
            nearest_cosine_distance=pd.Series(dtype="float64"),
            nearest_uniqueness_distance=pd.Series(dtype="float64"),
        )
    # Every content its own group: a different content at any distance, even 0, is its nearest.
    found = find_content_neighbors(
        vectors, near_duplicate_cosine_distance, hash_signal, engine=engine, group_identical=False
    )
    nearest = found.nearest_row
    distance = found.nearest_distance.astype(np.float64)
    paths = contents["path"].to_numpy(dtype=object)
    return contents.assign(
        nearest_path=[paths[i] if i >= 0 else None for i in nearest],
        nearest_cosine_distance=np.where(np.isinf(distance), np.nan, distance),
        nearest_uniqueness_distance=np.where(np.isinf(distance), np.nan, to_uniqueness(distance)),
    ).sort_values("path", ignore_index=True)


def collection_placements(
    raw_images: pd.DataFrame, rejected_images: pd.DataFrame, duplicates: pd.DataFrame, clean: pd.DataFrame
) -> pd.DataFrame:
    """How many collections each image landed in, against whether it was discovered.

    SPEC.md: `clean + duplicates + rejected == discovered`, every file in exactly one. Discovered
    files are the decodable `raw_images` plus the `rejected_images`.

    Args:
        raw_images, rejected_images, duplicates, clean: tables with columns image_id and path.

    Returns:
        A new DataFrame, one row per image id seen in any table, sorted by path: image_id, path,
        discovered (0/1), in_clean, in_duplicates, in_rejected (row counts) and times_placed (their
        sum). The invariant holds when `times_placed == discovered` on every row.
    """
    discovered = pd.concat([raw_images[["image_id", "path"]], rejected_images[["image_id", "path"]]])
    collections = {"in_clean": clean, "in_duplicates": duplicates, "in_rejected": rejected_images}
    everything = pd.concat([discovered, *(t[["image_id", "path"]] for t in collections.values())]).drop_duplicates(
        "image_id"
    )
    table = everything.set_index("image_id")
    table["discovered"] = table.index.isin(discovered["image_id"]).astype("int64")
    for column, collection in collections.items():
        table[column] = collection["image_id"].value_counts().reindex(table.index, fill_value=0).astype("int64")
    table["times_placed"] = table[list(collections)].sum(axis=1).astype("int64")
    return table.reset_index().sort_values(["path", "image_id"], ignore_index=True)


def accounting_counts(
    raw_images: pd.DataFrame, rejected_images: pd.DataFrame, duplicates: pd.DataFrame, clean: pd.DataFrame
) -> dict:
    """The row counts in SPEC.md's invariant: {discovered, clean, duplicates, rejected, placed}."""
    return {
        "discovered": len(raw_images) + len(rejected_images),
        "clean": len(clean),
        "duplicates": len(duplicates),
        "rejected": len(rejected_images),
        "placed": len(clean) + len(duplicates) + len(rejected_images),
    }

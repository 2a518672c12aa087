"""Which cheap rule would tell the hard negatives' false pairs from true near-duplicates? (Issue 16,
precision: ideas measured before building them.)

Reads the sets a `bench/quality.py` run left in OUT (each set's catalog and vector table under
OUT/<set>/state, its ground truth in the shared data or the generated folders) and, for every pair
of distinct contents that the embedding puts within the near-duplicate radius or that the pHash
vouches for (both hashes informative, within the cutoff), reports per set and truth:

- `hash only, identity` / `hash only, turned`: pairs beyond the embedding radius that only the pHash
  decides, split by whether its closest variant is the identity or a rotation/flip, with the
  range of their embedding uniqueness (cosine distance / 2): could a bound on the embedding
  distance of a turned match drop the false ones and keep the true ones?
- `embedding, hash >= N bits`: pairs within the embedding radius, both hashes informative, whose
  rotation/flip-invariant pHash distance is at least N bits (default 20): could a far hash flag
  texture crops?
- `embedding, flat`: pairs within the embedding radius where an image is flat (its hash carries no
  information), with the largest per-channel difference of the two images' mean colours.
- `turned pHash match only`: pairs the pHash puts within the cutoff only through a rotated or
  flipped variant (the identities are farther), with the smallest distance of the two images'
  256-bit edge hashes after such a turn (`core.distances.confirmed_invariant_hamming` counts the
  turn only up to EDGE_AGREEMENT_BITS): the figure that tells true turned copies from opposite
  quarters of point-symmetric pictures. Another view of pairs already counted under the kinds
  above, not a kind of its own.

Usage:
    .venv/bin/python bench/precision_signals.py OUT [--far-bits 20]

OUT: the `--out` of a finished `bench/quality.py` run (default /tmp/imgdedup-bench). Prints one
line per (set, kind, truth) and a JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgdedup_pipeline.core.images import dihedral_edge_hashes, informative_phashes, to_rgb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "bench" / "data"
SHARED_SETS = ("idealo-imagededup", "jenssegers-imagehash", "threatexchange-pdq")


def set_folders(out: Path) -> dict[str, Path]:
    """Set name -> its data folder (groups.json), for every set quality.py scored in OUT."""
    folders = {name: SHARED_DATA / name for name in SHARED_SETS if (out / name / "state").is_dir()}
    for generated in ("edited-copies-data", "hard-negatives-data"):
        for folder in sorted((out / generated).glob("*")):
            if (out / folder.name / "state").is_dir():
                folders[folder.name] = folder
    return folders


def contents(out: Path, name: str, data: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per distinct content (pixel hash, path, group, hashes) and its L2-normalised vectors."""
    import lancedb

    state = out / name / "state"
    catalog = pd.read_parquet(sorted(state.glob("catalog-*.parquet"))[-1]).drop_duplicates("pixel_hash")
    database = lancedb.connect(str(state / "lancedb"))
    (table_name,) = database.list_tables().tables
    table = database.open_table(table_name).to_pandas()
    vector_column = next(c for c in table.columns if c != "pixel_hash" and table[c].dtype == object)
    vectors = dict(zip(table["pixel_hash"], table[vector_column], strict=True))
    groups = json.loads((data / "groups.json").read_text())
    group_of = {path: group for group, paths in groups.items() for path in paths}

    def group(path: str) -> str | None:
        return next((g for p, g in group_of.items() if path.endswith(p) or p.endswith(path)), None)

    catalog = catalog.assign(group=catalog["path"].map(group)).reset_index(drop=True)
    matrix = np.stack([np.asarray(vectors[h], dtype=np.float32) for h in catalog["pixel_hash"]])
    return catalog, matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def mean_colour(data: Path, path: str) -> np.ndarray | None:
    """Mean RGB of the file, or None when it is not found under the set's folder."""
    candidates = [data / path, *(data / Path(*Path(path).parts[i:]) for i in range(1, len(Path(path).parts)))]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return None
    with Image.open(found) as image:
        return np.asarray(to_rgb(image), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def pairs(out: Path, name: str, data: Path, threshold: float, cutoff_bits: int) -> pd.DataFrame:
    """Every pair within the embedding radius or vouched for by the pHash, with its figures."""
    catalog, matrix = contents(out, name, data)
    hashes = np.stack([np.asarray(p, dtype=np.int64).view(np.uint64) for p in catalog["phashes"]])
    edges = np.stack([np.asarray(e, dtype=np.int64).view(np.uint64) for e in catalog["edge_hash"]])
    turned_edges = dihedral_edge_hashes(edges)  # (M, 8, words)
    informative = informative_phashes(hashes)
    uniqueness = (1.0 - matrix @ matrix.T) / 2.0
    left, right = np.triu_indices(len(catalog), k=1)
    bits = np.bitwise_count(hashes[left, :1] ^ hashes[right]).astype(np.int64)  # (P, 8)
    both = informative[left] & informative[right]
    hash_vouched = both & (bits.min(axis=1) <= cutoff_bits)
    embedding_close = uniqueness[left, right] <= threshold
    keep = hash_vouched | embedding_close
    groups = catalog["group"].to_numpy()
    frame = pd.DataFrame(
        {
            "set": name,
            "left": catalog["path"].to_numpy()[left[keep]],
            "right": catalog["path"].to_numpy()[right[keep]],
            "true": (groups[left[keep]] == groups[right[keep]]) & pd.notna(groups[left[keep]]),
            "uniqueness": uniqueness[left[keep], right[keep]],
            "bits": bits[keep].min(axis=1),
            "turned": bits[keep].argmin(axis=1) > 0,
            "informative": both[keep],
            "embedding_close": embedding_close[keep],
            "turned_edge_bits": turned_edge_bits(hashes, edges, turned_edges, left[keep], right[keep], cutoff_bits),
        }
    )
    colour_gap = []
    for row in frame.itertuples():
        if row.informative:
            colour_gap.append(np.nan)
            continue
        colours = [mean_colour(data, row.left), mean_colour(data, row.right)]
        found = all(c is not None for c in colours)
        colour_gap.append(float(np.abs(colours[0] - colours[1]).max()) if found else np.nan)
    return frame.assign(colour_gap=colour_gap)


def turned_edge_bits(hashes, edges, turned_edges, left, right, cutoff_bits: int) -> np.ndarray:
    """Per pair: NaN when an identity hash is within the cutoff of the other's identity or no turned
    variant is, else the smallest edge-hash distance over the turned variants within it (both ways)."""
    figures = np.full(len(left), np.nan)
    for pair, (i, j) in enumerate(zip(left, right, strict=True)):
        forward, backward = np.bitwise_count(hashes[i, 0] ^ hashes[j]), np.bitwise_count(hashes[j, 0] ^ hashes[i])
        if min(forward[0], backward[0]) <= cutoff_bits:
            continue
        edge_forward = np.bitwise_count(edges[i] ^ turned_edges[j]).sum(axis=1)
        edge_backward = np.bitwise_count(edges[j] ^ turned_edges[i]).sum(axis=1)
        within = np.r_[forward[1:], backward[1:]] <= cutoff_bits
        if within.any():
            figures[pair] = np.r_[edge_forward[1:], edge_backward[1:]][within].min()
    return figures


def summary(frame: pd.DataFrame, far_bits: int) -> list[dict]:
    """One row per (set, kind, truth): count and range of the figure that would decide."""
    kinds = {
        "hash only, identity": (~frame["embedding_close"] & ~frame["turned"], "uniqueness"),
        "hash only, turned": (~frame["embedding_close"] & frame["turned"], "uniqueness"),
        f"embedding, hash >= {far_bits} bits": (
            frame["embedding_close"] & frame["informative"] & (frame["bits"] >= far_bits),
            "bits",
        ),
        f"embedding, hash < {far_bits} bits": (
            frame["embedding_close"] & frame["informative"] & (frame["bits"] < far_bits),
            "bits",
        ),
        "embedding, flat": (frame["embedding_close"] & ~frame["informative"], "colour_gap"),
        "turned pHash match only": (frame["turned_edge_bits"].notna(), "turned_edge_bits"),
    }
    rows = []
    for (name, truth), part in frame.groupby(["set", "true"], sort=True):
        for kind, (mask, figure) in kinds.items():
            selected = part[mask.loc[part.index]]
            if len(selected):
                values = selected[figure]
                rows.append(
                    {
                        "set": name,
                        "kind": kind,
                        "true": bool(truth),
                        "pairs": len(selected),
                        "figure": figure,
                        "min": round(float(values.min()), 3),
                        "max": round(float(values.max()), 3),
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="/tmp/imgdedup-bench")
    parser.add_argument("--near-duplicate-threshold", type=float, default=0.05)
    parser.add_argument("--cutoff-bits", type=int, default=10)
    parser.add_argument("--far-bits", type=int, default=20)
    args = parser.parse_args()
    out = Path(args.out)
    frames = [
        pairs(out, name, data, args.near_duplicate_threshold, args.cutoff_bits)
        for name, data in set_folders(out).items()
    ]
    rows = summary(pd.concat(frames, ignore_index=True), args.far_bits)
    for row in rows:
        truth = "true " if row["true"] else "false"
        print(
            f"{row['set']:24s} {row['kind']:28s} {truth} {row['pairs']:4d} pairs  "
            f"{row['figure']} {row['min']:.3f}-{row['max']:.3f}"
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

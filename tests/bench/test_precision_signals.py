"""`bench/precision_signals.py` sorts each pair into the kind of rule that would decide it and
reports the range of the figure that rule would read, per set and truth."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.precision_signals import summary  # noqa: E402


def test_each_pair_counts_once_under_the_kind_that_decides_it():
    frame = pd.DataFrame(
        {
            "set": ["s"] * 5,
            "left": list("abcde"),
            "right": list("fghij"),
            "true": [True, True, False, False, False],
            "uniqueness": [0.2, 0.01, 0.3, 0.02, 0.03],
            "bits": [6, 0, 8, 24, 0],
            "turned": [True, False, True, False, False],
            "informative": [True, True, True, True, False],
            "embedding_close": [False, True, False, True, True],
            "colour_gap": [float("nan")] * 4 + [255.0],
            # The turned-only pHash pairs' edge-hash distance (NaN where the identity vouches).
            "turned_edge_bits": [12.0, float("nan"), 60.0, float("nan"), float("nan")],
        }
    )
    rows = {(row["kind"], row["true"]): row for row in summary(frame, far_bits=20)}
    assert rows[("hash only, turned", True)]["pairs"] == 1
    assert rows[("hash only, turned", False)]["min"] == 0.3
    assert rows[("embedding, hash < 20 bits", True)]["max"] == 0
    assert rows[("embedding, hash >= 20 bits", False)]["min"] == 24
    assert rows[("embedding, flat", False)]["max"] == 255.0
    # The turned-only pairs are also reported by their edge hashes: another view of the same pairs.
    assert rows[("turned pHash match only", True)]["max"] == 12.0
    assert rows[("turned pHash match only", False)]["min"] == 60.0
    assert sum(row["pairs"] for (kind, _), row in rows.items() if kind != "turned pHash match only") == len(frame)

"""The one place that picks a neighbour-search engine for a signal and a size, with a one-line
reason (shown in the run's `neighbor_search` metadata).

Embeddings (`cosine`): the setting is `exact` (streamed exact search, kept incrementally between
runs by `core.search.cache`), `index` (faiss IVF, `core.search.ivf`) or `auto`: the index from
INDEX_MIN_CONTENTS contents up when faiss-cpu is installed. The exact search uses the bf16
candidate filter where the CPU multiplies bf16 natively and the table is large enough.
Perceptual hashes (`hamming`): only the pairs within the cutoff count (SPEC.md), which both
Hamming engines find exactly; the multi-index search is taken where its plan is estimated cheaper,
whatever the setting.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, get_args

from imgdedup_pipeline.core.search.bf16 import BF16_MIN_ROWS, bf16_matmul_is_fast
from imgdedup_pipeline.core.search.engines import ExactCosine, ExactHamming, IndexedCosine, IndexedHamming
from imgdedup_pipeline.core.search.mih_plan import plan_substrings
from imgdedup_pipeline.core.search.protocol import NeighborEngine

SearchEngineSetting = Literal["auto", "exact", "index"]
SEARCH_ENGINES: tuple[SearchEngineSetting, ...] = get_args(SearchEngineSetting)
# The exact search grows as N^2 and the index about as N; the index also misses a few neighbours
# (recall < 1), so it is taken only where the exact search gets slow (BENCHMARKS.md).
INDEX_MIN_CONTENTS = 250_000
# Below this many rows the exact search is both faster than training an index and exact.
MIN_INDEX_ROWS = 2_000


@dataclass(frozen=True)
class EngineChoice:
    """An engine (not built yet) and why it was picked.

    Attributes:
        engine: the engine to `build` over the rows.
        reason: one line for the run's metadata.
        mode: how its search is reported: `exact` (an exact cosine search, which a cache may bring
            up to date incrementally), `index` (the index setting or the multi-index Hamming
            search; never cached) or `full` (the exact Hamming search, every run).
    """

    engine: NeighborEngine
    reason: str
    mode: str


def choose_engine(
    signal: str,
    rows: int,
    setting: str = "exact",
    *,
    variants: int = 8,
    radius_bits: int = 0,
    index_available: bool | None = None,
    min_contents: int | None = None,
) -> EngineChoice:
    """The engine for `rows` rows of a signal.

    Args:
        signal: `cosine` (embeddings) or `hamming` (perceptual hashes).
        rows: how many rows will be searched.
        setting: cosine only, one of SEARCH_ENGINES.
        variants, radius_bits: hamming only: hash variants per row and the cutoff in bits.
        index_available: whether faiss-cpu is installed (None: looked up only when it matters).
        min_contents: where `auto` takes the index (default INDEX_MIN_CONTENTS).

    Raises:
        ValueError: an unknown signal or setting.
        ImportError: `index` without faiss-cpu, naming the fix.
    """
    if signal == "hamming":
        plan = plan_substrings(rows, variants, radius_bits) if rows > 1 else None
        reason = f"pairs within {radius_bits} bits of {rows} contents with an informative hash"
        return (
            EngineChoice(IndexedHamming(plan=plan), reason, "index")
            if plan is not None
            else EngineChoice(ExactHamming(), reason, "full")
        )
    if signal != "cosine":
        raise ValueError(f"unknown signal {signal!r}: use cosine (embeddings) or hamming (perceptual hashes)")
    engine, reason = _cosine_setting(setting, rows, index_available, min_contents)
    if engine == "exact":
        return EngineChoice(ExactCosine(precision=exact_precision(rows)), reason, "exact")
    if rows < MIN_INDEX_ROWS:  # the index setting's answer below this size is the exact one
        reason = f"{reason}; {rows} contents < {MIN_INDEX_ROWS}: searched exactly (no index to train)"
        return EngineChoice(ExactCosine(precision=exact_precision(rows)), reason, "index")
    return EngineChoice(IndexedCosine(), reason, "index")


def _cosine_setting(
    setting: str, contents: int, index_available: bool | None, min_contents: int | None
) -> tuple[str, str]:
    """(`exact` or `index`, why) for the embedding search over `contents` rows.

    `auto` takes the index from `min_contents` contents up when it is available, else the exact
    search, with the reason saying how to get the index; `index` when it is not available is an
    error that names the fix.
    """
    min_contents = INDEX_MIN_CONTENTS if min_contents is None else min_contents
    if setting not in SEARCH_ENGINES:
        raise ValueError(f"unknown neighbour search {setting!r}: use one of {', '.join(SEARCH_ENGINES)}")
    if setting == "exact":
        return "exact", "configured"
    if setting == "auto" and contents < min_contents:
        return "exact", f"auto: {contents} contents < {min_contents}"
    if not (faiss_installed() if index_available is None else index_available):
        if setting == "index":
            raise ImportError(
                "neighbor_search=index needs faiss-cpu: pip install 'imgdedup-pipeline[scale]' (or choose neighbor_search=exact)"
            )
        return (
            "exact",
            f"auto: {contents} contents, but faiss-cpu is not installed (pip install 'imgdedup-pipeline[scale]' for the index)",
        )
    return "index", "configured" if setting == "index" else f"auto: {contents} contents >= {min_contents}"


def exact_precision(rows: int) -> str:
    """`bf16` (candidate filter, same answer) where the CPU multiplies bf16 natively and `rows` is
    large enough to repay its set-up, else `fp32`."""
    return "bf16" if rows >= BF16_MIN_ROWS and bf16_matmul_is_fast() else "fp32"


def faiss_installed() -> bool:
    """Whether the embedding index can run here (faiss-cpu importable)."""
    return importlib.util.find_spec("faiss") is not None

"""The plan of a multi-index Hamming search (`core.search.mih`): how the 64 hash bits are cut into
substrings, each probed within a few bits, so that no pair within the radius is missed and the
estimated cost is least; None where the exact search is estimated cheaper. Pure arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from imgdedup_pipeline.core.search.exact_hamming import HASH_BITS

MAX_SUBSTRING_BITS = 24  # a table has 2**bits buckets (bucket starts: 4 bytes each)
MIN_SUBSTRING_BITS = 4
MAX_TABLE_BYTES = 128 << 20  # inline slots of one table (2 slots at 23 bits, 4 at 22)
MAX_SLOTS = 64
# Cost model in ns, fitted once on 1M x 8 random hashes (one thread): only the ratios matter, to
# rank plans against each other and against the exact search. A probe (key xor, row gather,
# crowded flag), an inline slot (gather, xor, popcount, compare), a probe of a crowded bucket
# (decode and overflow block), an overflow entry, filing an entry / an inline cell, and one
# variant of a cell of the exact O(M^2) search (`core.search.exact_hamming`).
PROBE_NS = 5.0
SLOT_NS = 1.6
CROWDED_NS = 40.0
OVERFLOW_NS = 4.0
BUILD_NS = 130.0
CELL_NS = 2.0
EXACT_NS_PER_VARIANT = 5.0


@dataclass(frozen=True)
class Substring:
    """One table of the index: hash bits [shift, shift + bits), probed within `radius` bits;
    `slots` entries per bucket are held inline, more are read from the overflow."""

    shift: int
    bits: int
    radius: int
    slots: int

    @property
    def mask(self) -> int:
        """The substring's bits in place (for a 64-bit xor)."""
        return ((1 << self.bits) - 1) << self.shift


def plan_substrings(rows: int, variants: int, radius: int, allow_exact: bool = True) -> tuple[Substring, ...] | None:
    """The cheapest exact substring split for this many rows and variants, or None where the
    exact O(M^2) search is estimated cheaper (`allow_exact`) or the radius is 64 bits or more.

    Searched: m substrings of 64 bits in total (each MIN..MAX_SUBSTRING_BITS bits), radii with
    sum(r_t + 1) > radius; per table the number of inline slots minimising the cost model for a
    Poisson bucket occupancy X (entries / 2**bits on average). A table costs probes (rows x keys
    within r_t) x (PROBE_NS + SLOT_NS slots + CROWDED_NS P(X > slots) + OVERFLOW_NS
    E[X - slots; X > slots]), plus filing its entries and cells. Tables add up, so the best split
    is a shortest path over (bits covered, radius budget left). Real hashes cluster, so buckets
    are fuller than Poisson; crowded buckets then cost time (not memory) and the plan stays exact.
    """
    return _plan(int(rows), int(variants), int(radius), bool(allow_exact))


@lru_cache(maxsize=64)
def _plan(rows: int, variants: int, radius: int, allow_exact: bool) -> tuple[Substring, ...] | None:
    if radius >= HASH_BITS:
        return None
    entries = rows * variants
    need = radius + 1  # best[b][u]: cheapest tables covering b bits with sum(r_t + 1) >= u
    tables = {}  # (bits, r_t) -> (estimated ns, slots)
    for bits in range(MIN_SUBSTRING_BITS, MAX_SUBSTRING_BITS + 1):
        per_probe, slots = _probe_cost(entries, bits)
        fixed = entries * BUILD_NS + 2**bits * slots * CELL_NS
        for r in range(min(bits, radius) + 1):
            tables[bits, r] = (fixed + rows * _keys_within(bits, r) * per_probe, slots)
    best = [[math.inf] * (need + 1) for _ in range(HASH_BITS + 1)]
    best[0][0] = 0.0
    choice = {}
    for covered in range(1, HASH_BITS + 1):
        for budget in range(need + 1):
            for (bits, r), (cost, slots) in tables.items():
                if bits <= covered:
                    cost += best[covered - bits][max(0, budget - r - 1)]
                    if cost < best[covered][budget]:
                        best[covered][budget] = cost
                        choice[covered, budget] = (bits, r, slots)
    if not math.isfinite(best[HASH_BITS][need]):
        return None
    if allow_exact and best[HASH_BITS][need] > EXACT_NS_PER_VARIANT * variants * rows * rows:
        return None
    plan, covered, budget = [], HASH_BITS, need
    while covered:
        bits, r, slots = choice[covered, budget]
        plan.append((bits, r, slots))
        covered, budget = covered - bits, max(0, budget - r - 1)
    plan.sort(key=lambda part: (-part[0], -part[1]))
    shifts = np.cumsum([0] + [bits for bits, _, _ in plan[:-1]])
    return tuple(Substring(int(shift), bits, r, slots) for shift, (bits, r, slots) in zip(shifts, plan))


@lru_cache(maxsize=4096)
def _keys_within(bits: int, radius: int) -> int:
    return sum(math.comb(bits, d) for d in range(min(bits, radius) + 1))


def _probe_cost(entries: int, bits: int) -> tuple[float, int]:
    """(estimated ns per probe, best inline slots) of a table of `bits`-bit keys."""
    occupancy = entries / 2.0**bits
    best, best_slots = math.inf, 1
    for slots in range(1, MAX_SLOTS + 1):
        if (2**bits) * slots * 8 > MAX_TABLE_BYTES:
            break
        crowded, overflow = _expected_overflow(occupancy, slots)
        cost = PROBE_NS + SLOT_NS * slots + CROWDED_NS * crowded + OVERFLOW_NS * overflow
        if cost < best:
            best, best_slots = cost, slots
    return best, best_slots


def _expected_overflow(occupancy: float, slots: int) -> tuple[float, float]:
    """(P(X > slots), E[max(0, X - slots)]) for X ~ Poisson(occupancy)."""
    below = at_most = 0.0
    p = math.exp(-occupancy)
    for x in range(slots + 1):
        below += (slots - x) * p
        at_most += p
        p *= occupancy / (x + 1)
    return max(0.0, 1.0 - at_most), occupancy - slots + below


def check_plan(plan: tuple[Substring, ...], radius: int) -> None:
    """Refuse a plan that could miss a pair (or allocate a table beyond MAX_SUBSTRING_BITS)."""
    covered = np.zeros(HASH_BITS, bool)
    for sub in plan:
        if (
            not 1 <= sub.bits <= MAX_SUBSTRING_BITS
            or sub.shift < 0
            or sub.shift + sub.bits > HASH_BITS
            or sub.radius < 0
            or sub.slots < 1
        ):
            raise ValueError(f"bad substring {sub}")
        if covered[sub.shift : sub.shift + sub.bits].any():
            raise ValueError(f"substrings must be disjoint ranges of the 64 bits: {plan}")
        covered[sub.shift : sub.shift + sub.bits] = True
    # Bits in no substring can differ freely: the pigeonhole needs every bit covered.
    if not covered.all() or sum(sub.radius + 1 for sub in plan) <= radius:
        raise ValueError(f"plan does not guarantee every pair within {radius} bits: {plan}")

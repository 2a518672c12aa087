"""Embedding shards: contents split by the first hex digit of their pixel hash.

Each vector depends only on its own image, so embedding the shards separately (in any order, on
any machine) and merging them by pixel hash gives the same vectors as one unsharded pass.
"""

from __future__ import annotations

# One shard per hex digit: SHA-256 hex digests spread contents evenly over them.
SHARD_KEYS = tuple("0123456789abcdef")


def shard_of(pixel_hash: str) -> str:
    """The shard key of one content: the first character of its (lower-case hex) pixel hash."""
    key = pixel_hash[:1]
    if key not in SHARD_KEYS:
        raise ValueError(
            f"pixel hash {pixel_hash!r} does not start with a lower-case hex digit, so it belongs to no shard"
        )
    return key


def in_shard(paths_by_hash: dict[str, str], key: str) -> dict[str, str]:
    """The entries of `paths_by_hash` (pixel hash -> path) whose content belongs to shard `key`."""
    if key not in SHARD_KEYS:
        raise ValueError(f"unknown shard {key!r}; shards are {', '.join(SHARD_KEYS)}")
    return {pixel_hash: path for pixel_hash, path in paths_by_hash.items() if shard_of(pixel_hash) == key}

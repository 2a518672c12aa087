"""read_or_discard: a damaged cache is named, removed and reported as absent; inputs_digest and
result_for_inputs: a stored result is reused only under the digest of the inputs it came from."""

import json
from pathlib import Path

import numpy as np
import pytest

from imgdedup_pipeline.core.disposable_cache import inputs_digest, read_or_discard, result_for_inputs


def test_a_readable_cache_is_returned(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text('{"a": 1}')
    warnings = []
    assert read_or_discard(path, lambda p: json.loads(p.read_text()), warnings.append) == {"a": 1}
    assert warnings == [] and path.exists()


def test_a_missing_cache_is_none_without_a_word(tmp_path):
    warnings = []
    assert read_or_discard(tmp_path / "absent.json", lambda p: json.loads(p.read_text()), warnings.append) is None
    assert warnings == []


def test_a_damaged_cache_is_named_and_removed(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text('{"a": ')
    warnings = []
    assert read_or_discard(path, lambda p: json.loads(p.read_text()), warnings.append) is None
    assert len(warnings) == 1 and str(path) in warnings[0] and "JSONDecodeError" in warnings[0]
    assert not path.exists()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((1, "a"), (1, "b")),
        ((np.zeros(2, np.float32),), (np.zeros(2, np.float64),)),
        ((np.zeros((2, 1), np.float32),), (np.zeros((1, 2), np.float32),)),
        ((np.array([1.0, 2.0], np.float32),), (np.array([1.0, 2.5], np.float32),)),
        ((np.array(["ab", "c"], dtype=object),), (np.array(["a", "bc"], dtype=object),)),
        (("ab", "c"), ("a", "bc")),
        ((1,), (1.0,)),
        ((None,), ("None",)),
        (((1, 2), 3), (1, (2, 3))),
    ],
    ids=[
        "text",
        "dtype",
        "shape",
        "values",
        "object-array-split",
        "string-split",
        "int-vs-float",
        "none-vs-text",
        "nesting",
    ],
)
def test_different_inputs_have_different_digests(first, second):
    assert inputs_digest(*first) != inputs_digest(*second)
    assert inputs_digest(*first) == inputs_digest(*first)


def test_inputs_digest_refuses_what_it_cannot_describe():
    with pytest.raises(TypeError, match="set"):
        inputs_digest({1, 2})


def _bytes_cache(tmp_path, digest, value, warnings, computed):
    def compute():
        computed.append(value)
        return value

    return result_for_inputs(
        tmp_path,
        "figure.png",
        digest,
        compute,
        read=lambda p: p.read_bytes(),
        write=lambda data, p: open(p, "wb").write(data),
        warn=warnings.append,
    )


def test_a_result_is_reused_only_under_the_digest_of_its_inputs(tmp_path):
    warnings, computed = [], []
    assert _bytes_cache(tmp_path, "d1", b"one", warnings, computed) == (b"one", False)
    assert _bytes_cache(tmp_path, "d1", b"not computed", warnings, computed) == (b"one", True)
    assert _bytes_cache(tmp_path, "d2", b"two", warnings, computed) == (b"two", False)
    assert computed == [b"one", b"two"] and warnings == []
    # One stored result per name: the one under the older digest is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure-d2.png"]


def test_an_unreadable_stored_result_is_computed_again(tmp_path):
    warnings = []
    (tmp_path / "figure-d1.png").write_bytes(b"")

    def read(path):
        if not path.read_bytes():
            raise ValueError("empty")
        return path.read_bytes()

    result = result_for_inputs(
        tmp_path,
        "figure.png",
        "d1",
        lambda: b"fresh",
        read=read,
        write=lambda data, p: Path(p).write_bytes(data),
        warn=warnings.append,
    )
    assert result == (b"fresh", False)
    assert len(warnings) == 1 and "figure-d1.png" in warnings[0]
    assert (tmp_path / "figure-d1.png").read_bytes() == b"fresh"

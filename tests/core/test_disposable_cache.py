"""read_or_discard: a damaged cache is named, removed and reported as absent."""
import json

from core.disposable_cache import read_or_discard


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

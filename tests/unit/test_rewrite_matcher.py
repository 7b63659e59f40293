"""rewrite's path matcher: backup's exclude patterns applied to stored paths and their ancestors."""

from __future__ import annotations

import pytest

from haeedge.errors import UsageError
from haeedge.operations.rewrite import build_matcher


@pytest.mark.parametrize(("patterns", "ipatterns", "path", "excluded"), [
    (["secret.key"], [], b"home/u/secret.key", True),
    (["secret.key"], [], b"home/u/secret.key.bak", False),
    (["*.pem"], [], b"etc/ssl/a.pem", True),
    (["/home/*/.aws"], [], b"home/u/.aws", True),
    (["/home/*/.aws"], [], b"home/u/.aws/credentials", True),  # below an excluded directory
    (["/home/*/.aws"], [], b"home/u/.awsome", False),
    (["/home/*/.aws"], [], b"srv/home/u/.aws", False),  # a path glob matches the whole absolute path
    ([".git"], [], b"src/p/.git/objects/ab/cdef", True),
    (["secret.key/"], [], b"a/secret.key", True),  # a trailing slash is dropped, as backup does
    ([], ["SECRET.*"], b"a/Secret.Key", True),
    (["SECRET.*"], [], b"a/Secret.Key", False),
    (["secret.key"], [], "caf\u00e9/secret.key".encode(), True),
    (["secret.key"], [], b"bad-\xff-name/secret.key", True),
    (["# a comment"], ["x"], b"# a comment", False),
])
def test_matches_as_backup_would_have_left_it_out(patterns, ipatterns, path, excluded):
    match, _p, _i = build_matcher(patterns, [], ipatterns, [])
    assert match(path) is excluded
    assert match(path) is excluded  # the directory cache answers the same


def test_no_pattern_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="give --exclude"):
        build_matcher([], [], [], [])
    only_comments = tmp_path / "p"
    only_comments.write_text("# nothing\n\n")
    with pytest.raises(UsageError, match="give --exclude"):
        build_matcher([], [str(only_comments)], [], [])


def test_exclude_file_patterns_are_read(tmp_path):
    f = tmp_path / "p"
    f.write_text("# keys\n*.key\n/srv/cache\n")
    match, pats, _i = build_matcher(["x"], [str(f)], [], [])
    assert pats == ["x", "*.key", "/srv/cache"]
    assert match(b"a/b.key") and match(b"srv/cache/f") and not match(b"srv/cached")

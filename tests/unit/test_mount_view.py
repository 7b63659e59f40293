"""The mount's file-system logic without FUSE: layout, path lookup, attributes and range reads
against a real repository made by the real CLI."""

from __future__ import annotations

import errno
import os
import random
import stat

import pytest

from haeedge.mount.blobcache import BlobCache
from haeedge.mount.view import RepositoryView, build_tree, safe_name, snapshot_dir_name
from haeedge.repo.tree import Node
from tests.support.repos import SMALL_CHUNKS, init_library_repo


@pytest.fixture
def backed_up(cli, tmp_path):
    """A small tree in a repository with small chunks; a full and an incremental snapshot."""
    handle = init_library_repo(cli.repo_path, chunker=SMALL_CHUNKS)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    big = random.Random(3).randbytes(2 * 1024 * 1024 + 333)
    (src / "big.bin").write_bytes(big)
    (src / "sub" / "a.txt").write_bytes(b"first\n")
    os.link(src / "sub" / "a.txt", src / "hard")
    os.symlink("sub/a.txt", src / "link")
    os.chmod(src / "sub" / "a.txt", 0o640)
    os.utime(src / "big.bin", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    cli.backup(src, "--tag", "daily", "--tag", "a/b")
    (src / "new.txt").write_bytes(b"added later\n")
    (src / "link").unlink()
    summary = cli.backup(src)
    assert summary["kind"] == "incremental", summary
    return handle, src, big


def rel(src) -> str:
    return os.path.abspath(src).lstrip("/")


def test_layout_lookup_and_attributes(backed_up):
    handle, src, big = backed_up
    with handle.open() as repo:
        snaps = repo.list_snapshots()
        view = RepositoryView(repo, snaps)
        full, inc = snaps
        assert sorted(view.list_dir("/")) == [b"hosts", b"latest", b"snapshots", b"tags"]
        names = [snapshot_dir_name(s).encode() for s in snaps]
        assert sorted(view.list_dir("/snapshots")) == sorted(names)  # two snapshots may share a second
        assert view.readlink("/latest") == b"snapshots/" + names[1]
        assert sorted(view.list_dir(f"/hosts/{full.host}")) == sorted([*names, b"latest"])
        assert view.readlink(f"/hosts/{full.host}/latest") == names[1]
        assert sorted(view.list_dir("/tags")) == [b"a%2Fb", b"daily"]
        assert view.list_dir("/tags/daily") == [names[0]]

        base_full = f"/snapshots/{names[0].decode()}/{rel(src)}"
        base_inc = f"/snapshots/{names[1].decode()}/{rel(src)}"
        assert sorted(view.list_dir(base_full)) == [b"big.bin", b"hard", b"link", b"sub"]
        # The incremental shows its whole effective tree: unchanged files from the full, the
        # new file, and not the deleted link.
        assert sorted(view.list_dir(base_inc)) == [b"big.bin", b"hard", b"new.txt", b"sub"]
        with pytest.raises(OSError) as e:
            view.lookup(base_inc + "/link")
        assert e.value.errno == errno.ENOENT

        st = os.lstat(src / "big.bin")
        a = view.getattr(base_inc + "/big.bin")
        assert stat.S_ISREG(a["st_mode"]) and a["st_size"] == len(big)
        assert a["st_mtime"] == st.st_mtime_ns == 1_600_000_000_123_456_789
        assert (a["st_uid"], a["st_gid"]) == (st.st_uid, st.st_gid)
        a_txt = view.getattr(base_full + "/sub/a.txt")
        hard = view.getattr(base_full + "/hard")
        assert stat.S_IMODE(a_txt["st_mode"]) == 0o640
        assert a_txt["st_ino"] == hard["st_ino"] and a_txt["st_nlink"] == hard["st_nlink"] == 2
        assert view.readlink(base_full + "/link") == b"sub/a.txt"
        assert stat.S_ISDIR(view.getattr(f"/snapshots/{names[0].decode()}/tmp")["st_mode"])
        # Inode numbers differ between snapshots and stay the same when a tree is loaded again.
        assert view.getattr(base_full + "/big.bin")["st_ino"] != a["st_ino"]
        view._trees.clear()
        assert view.getattr(base_inc + "/big.bin")["st_ino"] == a["st_ino"]
        view.close()


def test_range_reads_fetch_only_the_chunks_they_need(backed_up):
    handle, src, big = backed_up
    with handle.open() as repo:
        snaps = repo.list_snapshots()
        view = RepositoryView(repo, snaps, read_ahead=0)
        path = f"/latest/{rel(src)}/big.bin".replace("/latest", "/snapshots/" + snapshot_dir_name(snaps[1]))
        state = view.open(path)
        chunks = state.node.entry.chunks
        assert len(chunks) > 40, "the test needs a file of many chunks"
        starts = [0]
        for _bid, length in chunks:
            starts.append(starts[-1] + length)

        # A read inside one chunk in the middle fetches exactly that chunk.
        mid = len(chunks) // 2
        off = starts[mid] + 10
        assert view.read(state, off, 100) == big[off:off + 100]
        assert view.cache.stats.blobs_fetched == 1
        assert view.cache.stats.bytes_fetched == chunks[mid][1]
        # Across a boundary: the two chunks on either side (one of them cached already).
        off = starts[mid + 1] - 50
        assert view.read(state, off, 100) == big[off:off + 100]
        assert view.cache.stats.blobs_fetched == 2
        # Random ranges, the end of the file and past it.
        rng = random.Random(5)
        for _ in range(50):
            off = rng.randrange(len(big))
            n = rng.randrange(1, 200_000)
            assert view.read(state, off, n) == big[off:off + n]
        assert view.read(state, len(big) - 10, 4096) == big[-10:]
        assert view.read(state, len(big) + 5, 4096) == b""
        with pytest.raises(OSError) as e:
            view.open(f"/snapshots/{snapshot_dir_name(snaps[1])}/{rel(src)}")
        assert e.value.errno == errno.EISDIR
        view.close()


def test_sequential_reads_fetch_ahead_and_the_cache_stays_bounded(backed_up):
    handle, src, big = backed_up
    with handle.open() as repo:
        snaps = repo.list_snapshots()
        view = RepositoryView(repo, snaps, cache_bytes=256 * 1024, read_ahead=128 * 1024)
        state = view.open(f"/snapshots/{snapshot_dir_name(snaps[0])}/{rel(src)}/big.bin")
        out = bytearray()
        while True:
            b = view.read(state, len(out), 128 * 1024)
            if not b:
                break
            out += b
            assert view.cache.size <= 256 * 1024
        assert bytes(out) == big
        assert view.cache.stats.evicted > 0
        view.close()
        # Every chunk fetched once at least; read-ahead may have had to fetch an evicted one again.
        assert view.cache.stats.bytes_fetched >= len(big)


def test_blob_cache_fetches_once_and_bounds_memory():
    calls = []

    def fetch(bid: bytes) -> bytes:
        calls.append(bid)
        return bid * 100

    cache = BlobCache(fetch, max_bytes=250)
    assert cache.get(b"a") == b"a" * 100 and cache.get(b"a") == b"a" * 100
    assert calls == [b"a"] and cache.stats.hits == 1
    cache.get(b"b")
    cache.get(b"c")  # 300 bytes > 250: the least recently used ("a") goes
    assert cache.size == 200 and b"a" not in cache and cache.stats.evicted == 1
    cache.get(b"a")
    assert calls == [b"a", b"b", b"c", b"a"]

    def failing(bid: bytes) -> bytes:
        raise OSError(errno.EIO, "gone")

    bad = BlobCache(failing, max_bytes=100)
    with pytest.raises(OSError):
        bad.get(b"x")
    assert b"x" not in bad  # a failed fetch is not remembered


def test_made_up_parents_hardlinks_and_hostile_names():
    class Root:
        ino, mtime_ns = 7 << 32, 5

    entries = [
        Node(b"a/b/f", "file", 0o644, size=0, hardlink="1:2"),
        Node(b"a/b/g", "file", 0o600, size=0, hardlink="1:2"),
        Node(b"a/c", "file", 0o644, size=0),
        Node(b"a/c/x", "file", 0o644, size=0),  # below a file: skipped
    ]
    root = build_tree(iter(entries), Root)
    a = root.children[b"a"]
    assert a.kind == "dir" and sorted(a.children) == [b"b", b"c"]
    f, g = a.children[b"b"].children[b"f"], a.children[b"b"].children[b"g"]
    assert f is g and f.nlink == 2
    assert a.children[b"c"].kind == "file"
    assert safe_name("web/01") == b"web%2F01"
    assert safe_name("..") == b"%2E%2E" and safe_name("") == b"%00"

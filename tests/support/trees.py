"""Tree tools: scan, compare and build directory trees (the edge-case tree of the core issue).

Trees are walked with directory file descriptors, so paths longer than PATH_MAX work.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import stat
from pathlib import Path

from tests.support.cli import summary_of
from tests.support.repos import CHEAP_S2K, PASSWORD, SMALL_CHUNKS, init_library_repo

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _type_of(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}[stat.S_IFMT(mode)]


def _node(st: os.stat_result) -> dict:
    kind = _type_of(st.st_mode)
    n = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
         "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "nlink": st.st_nlink if kind == "file" else None,
         "ino": st.st_ino, "blocks": st.st_blocks}
    if kind == "file":
        n["size"] = st.st_size
    if kind in ("chardev", "blockdev"):
        n["rdev"] = st.st_rdev
    return n


def _digest_at(dir_fd: int, name: bytes) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    h = hashlib.sha256()
    try:
        while True:
            b = os.read(fd, 4 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def scan_tree(root: str | os.PathLike | bytes, content: bool = True) -> dict[bytes, dict]:
    """Every entry below (and including, as b"") ``root``: lstat fields, content digest, link target."""
    root_b = os.fsencode(root)
    out: dict[bytes, dict] = {}
    fd = os.open(root_b, _DIR_FLAGS)
    try:
        out[b""] = _node(os.fstat(fd))
        _scan_dir(fd, b"", out, content)
    finally:
        os.close(fd)
    return out


def _scan_dir(dir_fd: int, rel: bytes, out: dict, content: bool) -> None:
    with os.scandir(dir_fd) as it:
        names = sorted(os.fsencode(e.name) for e in it)
    for name in names:
        path = rel + b"/" + name if rel else name
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        n = _node(st)
        out[path] = n
        if n["type"] == "file" and content:
            n["sha256"] = _digest_at(dir_fd, name)
        elif n["type"] == "symlink":
            n["target"] = os.readlink(name, dir_fd=dir_fd)
        elif n["type"] == "dir":
            sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _scan_dir(sub, path, out, content)
            finally:
                os.close(sub)


COMPARED = ("type", "mode", "uid", "gid", "mtime_ns", "size", "sha256", "target", "rdev", "nlink")


def short(p: bytes) -> str:
    """A path for a message: long ones abbreviated."""
    return repr(p) if len(p) <= 120 else f"{p[:50]!r}...{p[-50:]!r} ({len(p)} bytes)"


def tree_differences(a: dict[bytes, dict], b: dict[bytes, dict], *, fields: tuple[str, ...] = COMPARED,
                     ignore: set[bytes] = frozenset()) -> list[str]:
    diffs = []
    for p in sorted(set(a) | set(b)):
        if p in ignore:
            continue
        if p not in b:
            diffs.append(f"{short(p)}: missing from the second tree")
            continue
        if p not in a:
            diffs.append(f"{short(p)}: only in the second tree")
            continue
        for f in fields:
            if a[p].get(f) != b[p].get(f):
                diffs.append(f"{short(p)}: {f} {a[p].get(f)!r} != {b[p].get(f)!r}")
    diffs += hardlink_differences(a, b, ignore)
    return diffs


def hardlink_groups(tree: dict[bytes, dict], ignore: set[bytes] = frozenset()) -> set[tuple[bytes, ...]]:
    by_ino: dict[int, list[bytes]] = {}
    for p, n in tree.items():
        if n["type"] == "file" and p not in ignore:
            by_ino.setdefault(n["ino"], []).append(p)
    return {tuple(sorted(ps)) for ps in by_ino.values() if len(ps) > 1}


def hardlink_differences(a: dict, b: dict, ignore: set[bytes] = frozenset()) -> list[str]:
    ga, gb = hardlink_groups(a, ignore), hardlink_groups(b, ignore)
    if ga == gb:
        return []
    only_a = [[short(p) for p in g] for g in sorted(ga - gb)]
    only_b = [[short(p) for p in g] for g in sorted(gb - ga)]
    return [f"hardlink groups differ: only in the first tree {only_a}, only in the second {only_b}"]


def assert_same_tree(src: str | os.PathLike | bytes, dst: str | os.PathLike | bytes, *,
                     fields: tuple[str, ...] = COMPARED, ignore: set[bytes] = frozenset()) -> dict[bytes, dict]:
    """Byte-for-byte and lstat comparison; returns the scan of ``src``."""
    a, b = scan_tree(src), scan_tree(dst)
    diffs = tree_differences(a, b, fields=fields, ignore=ignore)
    assert not diffs, f"{len(diffs)} differences between {short(os.fsencode(src))} and {short(os.fsencode(dst))}:\n" \
        + "\n".join(diffs[:40])
    return a


def restored_path(target: str | os.PathLike, source: str | os.PathLike) -> Path:
    """Where ``restore --target target`` puts ``source`` (by its full original path)."""
    return Path(target) / os.path.abspath(source).lstrip("/")


# ---------------------------------------------------------------------- edge-case tree

DEV_ENTRIES = (b"dev/null", b"dev/loop")
LONG_NAME = b"L" * 255


def _makedirs_at(root_fd: int, parts: list[bytes], mode: int = 0o755) -> int:
    """mkdir -p below a directory fd without ever passing a long path; returns the last dir's fd."""
    fd = os.dup(root_fd)
    for part in parts:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, mode, dir_fd=fd)
        nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd


def _write_at(dir_fd: int, name: bytes, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def make_deep_dirs(root: Path, total_len: int, name_len: int = 200) -> bytes:
    """Nested directories so that the innermost file's absolute path is exactly ``total_len`` bytes.

    Returns that file's path relative to ``root``.
    """
    leaf = b"deep.txt"
    budget = total_len - len(os.fsencode(os.path.abspath(root))) - 1 - len(leaf)  # "/" + dirs + "/" each
    parts: list[bytes] = []
    while budget > 0:
        n = min(name_len, budget - 1)
        if budget - (n + 1) in range(1, 5):  # never leave a remainder too short for a name
            n -= 5
        parts.append((b"%03d" % len(parts) + b"d" * name_len)[:n])
        budget -= n + 1
    assert budget == 0, budget
    root_fd = os.open(os.fsencode(root), _DIR_FLAGS)
    try:
        fd = _makedirs_at(root_fd, parts)
        try:
            _write_at(fd, leaf, b"at the bottom\n" * 100)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    rel = b"/".join([*parts, leaf])
    assert len(os.fsencode(os.path.abspath(root))) + 1 + len(rel) == total_len
    return rel


def open_deep_dir(root: str | os.PathLike, rel_dir: bytes) -> int:
    """An fd for ``root/rel_dir``, however long that path is (the caller closes it)."""
    root_fd = os.open(os.fsencode(root), _DIR_FLAGS)
    try:
        return _makedirs_at(root_fd, [p for p in rel_dir.split(b"/") if p])
    finally:
        os.close(root_fd)


def set_times_bottom_up(root: Path, rng: random.Random, skip: set[bytes] = frozenset()) -> None:
    """Give every entry a distinct mtime with nanoseconds, children before their directory."""
    tree = scan_tree(root, content=False)
    root_fd = os.open(os.fsencode(root), _DIR_FLAGS)
    try:
        for rel in sorted(tree, key=lambda p: p.count(b"/") if p else -1, reverse=True):
            if rel in skip or not rel:
                continue
            parent, _, name = rel.rpartition(b"/")
            fd = _makedirs_at(root_fd, parent.split(b"/")) if parent else os.dup(root_fd)
            try:
                t = 1_600_000_000_000_000_000 + rng.randrange(10**17)
                os.utime(name, ns=(t, t), dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
        t = 1_650_000_000_123_456_789
        os.utime(os.fsencode(root), ns=(t, t))
    finally:
        os.close(root_fd)


def make_edge_tree(root: Path, *, devices: bool = True, deep_total: int = 3800, sparse_mib: int = 48) -> dict:
    """Item 8 of the core issue, in one tree. Returns facts the tests check against.

    ``deep_total``: absolute length of the deepest path (below PATH_MAX by default,
    so the source itself is readable with plain paths; a restore target makes it longer).
    """
    rng = random.Random(8)
    root.mkdir()
    (root / "empty_file").write_bytes(b"")
    (root / "empty_dir").mkdir()
    (root / "small.txt").write_bytes(b"hello, world\n")
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    (root / "text.txt").write_bytes(b"".join(b"line %d of a compressible file\n" % i for i in range(60000)))
    # permissions
    m = root / "modes"
    m.mkdir()
    for name, mode in (("setuid", 0o4755), ("setgid", 0o2755), ("all", 0o7777), ("none", 0o000),
                       ("readonly", 0o444), ("private", 0o600)):
        (m / name).write_bytes(name.encode() * 10)
        os.chmod(m / name, mode)
    (m / "sticky_dir").mkdir()
    os.chmod(m / "sticky_dir", 0o1777)
    (m / "closed_dir").mkdir()
    (m / "closed_dir" / "inside").write_bytes(b"behind a 000 directory\n")
    # owners (we are root): unnamed ids and a named one
    o = root / "owners"
    o.mkdir()
    (o / "u1234").write_bytes(b"owned by 1234:5678\n")
    os.chown(o / "u1234", 1234, 5678)
    (o / "nobody").write_bytes(b"owned by nobody\n")
    os.chown(o / "nobody", 65534, 65534)
    (o / "dir1234").mkdir()
    os.chown(o / "dir1234", 1234, 5678)
    os.symlink("u1234", o / "link1234")
    os.lchown(o / "link1234", 1234, 5678)
    # symlinks
    s = root / "links"
    s.mkdir()
    os.symlink("../small.txt", s / "relative")
    os.symlink("/etc/hostname", s / "absolute")
    os.symlink("does/not/exist", s / "dangling")
    os.symlink("../empty_dir", s / "to_dir")
    os.symlink("loop", s / "loop")
    os.symlink(b"\xff\xfe-not-utf8", os.fsencode(s / "binary_target"))
    # hardlinks: a group of three across directories, and a pair
    h = root / "hard"
    (h / "sub").mkdir(parents=True)
    (h / "a").write_bytes(rng.randbytes(100_000))
    os.link(h / "a", h / "b")
    os.link(h / "a", h / "sub" / "c")
    (h / "x").write_bytes(b"pair\n")
    os.link(h / "x", h / "y")
    # names: not UTF-8, odd characters
    n = os.fsencode(root / "names")
    os.mkdir(n)
    odd = [b"caf\xe9", b"\xff\xfe\xfd", "\u00fcn\u00efc\u00f8d\u00e9 \u2713".encode(), b"new\nline", b"back\\slash",
           b" leading space", b"trailing space ", b"-dash", b"*star?", b"latest", b"\x01ctrl", b"%s%n"]
    for name in odd:
        with open(n + b"/" + name, "wb") as f:
            f.write(b"name " + name + b"\n")
    os.mkdir(n + b"/\xe9dir")
    with open(n + b"/\xe9dir/inner\xff", "wb") as f:
        f.write(b"inside a non-UTF-8 directory\n")
    # long names and a deep tree
    lg = root / "long"
    lg.mkdir()
    with open(os.fsencode(lg) + b"/" + LONG_NAME, "wb") as f:
        f.write(b"a 255-byte name\n")
    deep = b"long/" + make_deep_dirs(lg, deep_total)
    # sparse files
    sp = root / "sparse"
    sp.mkdir()
    with open(sp / "islands.img", "wb") as f:
        f.truncate(sparse_mib << 20)
        for off in (0, (sparse_mib // 2) << 20, (sparse_mib << 20) - 5000):
            f.seek(off)
            f.write(rng.randbytes(4000))
    with open(sp / "hole.img", "wb") as f:
        f.truncate(16 << 20)
    # special files
    sf = root / "special"
    sf.mkdir()
    os.mkfifo(sf / "fifo", 0o640)
    os.mknod(sf / "socket", stat.S_IFSOCK | 0o755)
    if devices:
        d = root / "dev"
        d.mkdir()
        os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(d / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    # times: nanoseconds everywhere, plus some extreme values
    set_times_bottom_up(root, rng, skip=set())
    t = root / "times"
    t.mkdir()
    special_times = {"ns": 1_234_567_890_123_456_789, "zero": 0, "before_1970": -86_400_123_456_789,
                     "year_2100": 4_102_444_800_999_999_999}
    for name, ns in special_times.items():
        (t / name).write_bytes(name.encode())
        os.utime(t / name, ns=(ns, ns))
    os.utime(t, ns=(1_111_111_111_111_111_111, 1_111_111_111_111_111_111))
    # close the 000 directory last; keep the root's mtime
    st = os.lstat(m / "closed_dir")
    os.chmod(m / "closed_dir", 0o000)
    os.utime(m / "closed_dir", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(root, ns=(1_650_000_000_123_456_789, 1_650_000_000_123_456_789))
    return {"deep": deep, "devices": DEV_ENTRIES if devices else (), "sparse": [b"sparse/islands.img",
                                                                               b"sparse/hole.img"]}


def assert_sparse(src: str | os.PathLike, dst: str | os.PathLike, rel_paths: list[bytes]) -> None:
    """Restored sparse files occupy about as little space as their sources (not their size)."""
    for rel in rel_paths:
        a = os.lstat(os.fsencode(src) + b"/" + rel)
        b = os.lstat(os.fsencode(dst) + b"/" + rel)
        assert a.st_size == b.st_size
        assert a.st_blocks * 512 < a.st_size // 4, f"source {rel!r} is not sparse; the test is void"
        # Allow a few MiB of slack: zero runs next to data are written whole.
        assert b.st_blocks * 512 <= a.st_blocks * 512 + (16 << 20), \
            f"{rel!r} restored dense: {b.st_blocks * 512} bytes allocated for {b.st_size}"


class TreeTools:
    """The tree helpers, as a fixture (independent of how pytest imports test modules)."""

    scan = staticmethod(scan_tree)
    differences = staticmethod(tree_differences)
    assert_same = staticmethod(assert_same_tree)
    assert_sparse = staticmethod(assert_sparse)
    restored_path = staticmethod(restored_path)
    make_edge_tree = staticmethod(make_edge_tree)
    make_deep_dirs = staticmethod(make_deep_dirs)
    open_deep_dir = staticmethod(open_deep_dir)
    hardlink_groups = staticmethod(hardlink_groups)
    init_library_repo = staticmethod(init_library_repo)
    summary_of = staticmethod(summary_of)
    COMPARED = COMPARED
    LONG_NAME = LONG_NAME
    PASSWORD = PASSWORD
    SMALL_CHUNKS = SMALL_CHUNKS
    CHEAP_S2K = CHEAP_S2K

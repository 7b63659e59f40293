"""Replica defects a disaster drill found (issue 12: 1, 5, 6, 9, 10), through the real CLI and servers.

- a directory at the same local path as an ``sftp://`` repository's remote path is backed up,
  while a local repository (or local replica) inside the backed-up tree is still left out;
- a replicated ``init`` stopped by an unknown host key can simply be run again;
- ``sync`` to a missing bucket says so once, not once per object;
- a changed host key in a replicated set gets the ``ssh-keygen -R`` hint;
- ``--replica-policy fail`` with a replica down fails at once, in one line under ``-q``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.support.replication import Site, sftp_env
from tests.support.servers import start_sshd


def _paths(site: Site) -> set[str]:
    return {e["path"] for e in site("--json", "ls", "latest").ok().json()["entries"]}


def test_sftp_repository_does_not_hide_the_local_directory_of_its_remote_path(cli, sshd, tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    remote = srv / "data"  # the remote path; on this test machine the same directory as the local one
    loc = sshd.url_for(str(remote))
    site = Site(cli, [loc], env=sftp_env(sshd))
    site("init").ok()
    (remote / "marker.txt").write_text("a local file that happens to share the remote path\n")
    # Leave out the repository's own objects (the server writes them into this directory here).
    excludes = [x for part in ("config", "keys", "data", "index", "snapshots", "locks")
                for x in ("--exclude", str(remote / part))]
    site.backup(*excludes, srv)
    assert f"{remote}/marker.txt" in _paths(site), "the local directory was silently skipped"


def test_local_repository_and_local_replica_inside_the_tree_are_left_out(cli, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "a.txt").write_text("a\n")
    single = Site(cli, [str(tree / "repo")])
    single("init").ok()
    single.backup(tree)
    paths = _paths(single)
    assert f"{tree}/docs/a.txt" in paths and not any(p.startswith(f"{tree}/repo") for p in paths)

    inside, outside = tree / "replica", tmp_path / "outside-replica"
    both = Site(cli, [str(inside), str(outside)])
    both("init").ok()
    both.backup(tree)
    paths = _paths(both)
    assert f"{tree}/docs/a.txt" in paths and f"{tree}/repo/config" in paths
    assert not any(p.startswith(f"{inside}") for p in paths), "the local replica was backed up into itself"


def test_replicated_init_stopped_by_an_unknown_host_key_runs_again(cli, sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    local = tmp_path / "local-replica"
    site = Site(cli, [str(local), sshd.url_for(str(tmp_path / "remote-replica"))],
                env={**sftp_env(sshd), "HAEEDGE_SFTP_KNOWN_HOSTS": str(known_hosts)})
    r = site("init").expect(1)
    assert "unknown SSH host key" in r.stderr, r.describe()
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
    r = site("--accept-new-host-key", "init")
    assert r.code == 0, r.describe()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("hello\n")
    site.backup(src)
    site("verify").ok()


def test_replicated_init_finishes_a_replica_left_as_a_bare_skeleton(cli, tmp_path: Path) -> None:
    from haeedge.backends.local import LocalBackend

    first = tmp_path / "first"
    LocalBackend(str(first)).create()  # what an init stopped after creating this replica leaves
    site = Site(cli, [str(first), str(tmp_path / "second")])
    site("init").ok()
    site("verify").ok()
    (tmp_path / "third" / "keys").mkdir(parents=True)
    (tmp_path / "third" / "keys" / ("ab" * 32)).write_bytes(b"a slot of an init that stopped")
    r = Site(cli, [str(tmp_path / "third")])("init").expect(1)
    assert f"remove {tmp_path / 'third'}/keys/{'ab' * 32}" in r.stderr, r.describe()


def test_sync_to_a_missing_bucket_is_one_error(make_site, s3, tmp_path: Path) -> None:
    site = make_site("local")
    site("init").ok()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * 1000)
    site.backup(src)
    missing = "s3://no-such-bucket-haeedge/repo"
    grown = make_site("local", "s3")
    grown.locations[1] = missing
    grown.options[missing] = s3.options()
    r = grown("sync").expect(3)
    assert "cannot copy" not in r.stderr, r.describe()
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("haeedge: error:")]
    assert len(errors) == 1 and missing in errors[0] and "does not exist" in errors[0], r.describe()
    assert f"replica {missing}: up to date" not in r.stdout and "not repaired" in r.stdout, r.describe()
    summary = grown("--json", "sync").expect(3).json()
    assert missing in summary["unwritable"] and summary["objects_copied"] == 0


def test_changed_host_key_in_a_replicated_set_hints_ssh_keygen(cli, sshd, tmp_path: Path) -> None:
    site = Site(cli, [str(tmp_path / "local"), sshd.url_for(str(tmp_path / "remote"))], env=sftp_env(sshd))
    site("init").ok()
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True,
                   capture_output=True, timeout=30)
    pub = Path(f"{other}.pub").read_text().split()
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x\n")
    r = site("backup", src, env={"HAEEDGE_SFTP_KNOWN_HOSTS": str(changed)}).expect(1)
    assert "HAS CHANGED" in r.stderr and "ssh-keygen -R" in r.stderr, r.describe()
    assert "--replica-policy continue" not in r.stderr, r.describe()


def test_fail_policy_with_a_replica_down_fails_at_once_in_one_line(cli, tmp_path: Path) -> None:
    own = start_sshd(tmp_path / "own-sshd")
    try:
        remote = own.url_for(str(tmp_path / "remote"))
        site = Site(cli, [str(tmp_path / "local"), remote], env=sftp_env(own))
        site("init").ok()
        src = tmp_path / "src"
        src.mkdir()
        (src / "f.txt").write_text("x\n")
        own.stop()
        started = time.monotonic()
        r = site("-q", "backup", src).expect(1)
        elapsed = time.monotonic() - started
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("haeedge: error:") and remote in lines[0], r.describe()
        assert "unreachable" in lines[0] and "--replica-policy continue" in lines[0]
        assert elapsed < 5, f"took {elapsed:.1f}s"
    finally:
        own.stop()

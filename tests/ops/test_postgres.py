"""A real PostgreSQL round trip: pg_dump -> backup --stdin-from-command -> dump -> pg_restore -> same rows.

The server runs as the unprivileged ``postgres`` user on a temporary data
directory, listening only on a Unix socket in that directory (no TCP port to
collide with anything).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--", *cmd]


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed (Debian package postgresql)")
    if os.geteuid() == 0:
        pw = pwd.getpwnam(USER)
    base = Path(tempfile.mkdtemp(prefix="haeedge-pg-"))
    if os.geteuid() == 0:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o700)
    data, port = base / "data", _free_port()
    subprocess.run(_as_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
                             "--locale=C.UTF-8"]), check=True, capture_output=True, timeout=120)
    subprocess.run(_as_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                             "-o", f"-k {base} -p {port} -c listen_addresses='' -c fsync=off", "start"]),
                   check=True, capture_output=True, timeout=120)
    conn = {"host": str(base), "port": str(port), "user": USER}
    try:
        yield conn
    finally:
        subprocess.run(_as_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _args(conn: dict) -> list[str]:
    return ["-h", conn["host"], "-p", conn["port"], "-U", conn["user"]]


def psql(conn: dict, db: str, sql: str) -> str:
    proc = subprocess.run([str(PG_BIN / "psql"), *_args(conn), "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


ROWS_SQL = "SELECT id, name, encode(blob, 'hex'), note FROM items ORDER BY id"


def test_pg_dump_backup_dump_restore_same_rows(cli, fast_repo, postgres, tmp_path):
    psql(postgres, "postgres", "CREATE DATABASE shop")
    psql(postgres, "shop", """
        CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, blob bytea, note text);
        INSERT INTO items (name, blob, note)
            SELECT 'item ' || g, decode(md5(g::text) || md5((g * 7)::text), 'hex'),
                   CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('ünïcode ', g % 17) END
            FROM generate_series(1, 20000) g;
        CREATE INDEX items_name ON items (name);
    """)
    before = psql(postgres, "shop", ROWS_SQL)
    assert before.count("\n") == 20000

    pg_dump = [str(PG_BIN / "pg_dump"), *_args(postgres), "-Fc", "-Z0", "shop"]
    r = cli("--json", "backup", "--stdin-from-command", "--stdin-filename", "postgres/shop.dump", "--tag", "pg",
            "--", *pg_dump).ok()
    summary = r.json()
    assert summary["stream"] == {"source": "command", "program": "pg_dump"}
    assert summary["bytes_total"] > 500_000

    # Restore the way the runbook says: dump the file to pg_restore's stdin, into a new database.
    psql(postgres, "postgres", "CREATE DATABASE shop_restored")
    dump = subprocess.Popen(cli.command("dump", "latest", "/postgres/shop.dump"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.environ())
    restore = subprocess.run([str(PG_BIN / "pg_restore"), *_args(postgres), "-d", "shop_restored",
                              "--exit-on-error"], stdin=dump.stdout, capture_output=True, timeout=120)
    dump.stdout.close()
    assert dump.wait(timeout=60) == 0, dump.stderr.read().decode()
    assert restore.returncode == 0, restore.stderr.decode()
    assert psql(postgres, "shop_restored", ROWS_SQL) == before
    assert psql(postgres, "shop_restored", "SELECT indexname FROM pg_indexes WHERE tablename = 'items' "
                                           "ORDER BY 1") == "items_name\nitems_pkey\n"

    # The next night's dump deduplicates against the first (-Z0: haeedge compresses).
    psql(postgres, "shop", "UPDATE items SET note = 'changed' WHERE id <= 10")
    again = cli("--json", "backup", "--stdin-from-command", "--stdin-filename", "postgres/shop.dump", "--",
                *pg_dump).ok().json()
    assert again["bytes_added"] < summary["bytes_added"] / 2, (again["bytes_added"], summary["bytes_added"])
    cli("verify", "--read-data").ok()


def test_failing_pg_dump_leaves_no_snapshot(cli, fast_repo, postgres):
    before = cli("--json", "snapshots").ok().json()
    r = cli("backup", "--stdin-from-command", "--stdin-filename", "postgres/nope.dump", "--",
            str(PG_BIN / "pg_dump"), *_args(postgres), "-Fc", "no_such_database")
    assert r.code != 0 and r.code == 1, r.describe()
    assert 'database "no_such_database" does not exist' in r.stderr  # pg_dump's own message
    assert "'pg_dump' exited with status 1; no snapshot was saved" in r.stderr
    assert cli("--json", "snapshots").ok().json() == before
    # And a server that goes away: pg_dump fails, nothing is saved.
    r = cli("backup", "--stdin-from-command", "--", str(PG_BIN / "pg_dump"), "-h", "/nonexistent",
            "-p", "1", "-U", USER, "shop")
    assert r.code == 1 and "connection to server" in r.stderr and "no snapshot was saved" in r.stderr, r.describe()
    assert cli("--json", "snapshots").ok().json() == before

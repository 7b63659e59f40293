"""Disaster recovery with standard tools only: GnuPG opens every object, zstd inflates blobs.

A repository made by ``haeedge init`` + ``haeedge backup`` is read here with
``gpg --decrypt`` and ``zstd -d`` alone (plus struct/json/hmac to parse what
they print): key slot -> master keys -> config, snapshot, pack headers ->
tree blobs -> data blobs -> the original file bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import shutil
import struct
import subprocess

import pytest

HEADER_MAGIC = b"HAEPACK\x01"
ENTRY = struct.Struct("<BB32sII")


class Gpg:
    def __init__(self, home, workdir):
        self.home = home
        self.workdir = workdir
        self.exe = shutil.which("gpg")
        if self.exe is None:
            pytest.fail("gpg is not installed (apt-get install gnupg)")
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        self._n = 0

    def decrypt(self, message: bytes, passphrase: bytes) -> bytes:
        self._n += 1
        pw = self.workdir / f"pw{self._n}"
        msg = self.workdir / f"msg{self._n}.pgp"
        pw.write_bytes(passphrase + b"\n")
        msg.write_bytes(message)
        try:
            proc = subprocess.run([self.exe, "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback",
                                   "--no-symkey-cache", "--passphrase-file", str(pw), "--decrypt", str(msg)],
                                  capture_output=True, env=self.env, timeout=120)
        finally:
            pw.unlink()
            msg.unlink()
        if proc.returncode != 0:
            raise GpgFailed(proc.stderr.decode(errors="replace"))
        return proc.stdout

    def list_packets(self, message: bytes) -> str:
        msg = self.workdir / "list.pgp"
        msg.write_bytes(message)
        proc = subprocess.run([self.exe, "--batch", "--list-packets", "--pinentry-mode", "cancel", str(msg)],
                              capture_output=True, env=self.env, timeout=60)
        return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


class GpgFailed(Exception):
    pass


@pytest.fixture
def gpg(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    work = tmp_path / "gpgwork"
    work.mkdir()
    g = Gpg(home, work)
    yield g
    subprocess.run(["gpgconf", "--kill", "all"], env=g.env, capture_output=True, timeout=60)


def zstd_decompress(data: bytes) -> bytes:
    exe = shutil.which("zstd")
    if exe is None:
        pytest.fail("zstd is not installed (apt-get install zstd)")
    proc = subprocess.run([exe, "-d", "-q", "-c"], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse_pack(pack: bytes, gpg: Gpg, meta: bytes) -> list[dict]:
    (hlen,) = struct.unpack("<I", pack[-4:])
    header = gpg.decrypt(pack[len(pack) - 4 - hlen : -4], meta)
    assert header[:8] == HEADER_MAGIC
    (count,) = struct.unpack_from("<I", header, 8)
    entries, offset = [], 0
    for i in range(count):
        t, comp, bid, length, raw = ENTRY.unpack_from(header, 12 + i * ENTRY.size)
        entries.append({"type": t, "compression": comp, "id": bid, "offset": offset, "length": length, "raw": raw})
        offset += length
    assert offset == len(pack) - 4 - hlen, "blobs and header must tile the pack"
    return entries


def test_gpg_and_zstd_alone_recover_a_file(cli, repo, gpg, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    text = b"".join(b"log line %d: everything is fine\n" % i for i in range(100_000))  # compressible, ~3.5 MB
    noise = random.Random(5).randbytes(1_500_000)  # stored raw
    (src / "app.log").write_bytes(text)
    (src / "noise.bin").write_bytes(noise)
    cli("backup", src).ok()
    password = cli.password_file.read_bytes().strip()

    # 1. The key slot opens with the passphrase; it is a SKESK with an iterated+salted S2K.
    # keys/ also holds the slot's key record (sealed with meta, salted S2K): pick the passphrase slot.
    (slot_path,) = [p for p in repo.objects("keys") if "s2k 3," in gpg.list_packets(p.read_bytes())]
    slot = slot_path.read_bytes()
    packets = gpg.list_packets(slot)
    assert "symkey enc packet: version 4, cipher 9" in packets and "s2k 3, hash 8" in packets, packets
    assert "count 65011712" in packets, packets
    doc = json.loads(gpg.decrypt(slot, password))
    keys = doc["keys"]
    assert set(keys) >= {"content", "tree", "meta", "blob_id"}
    meta, content, tree = (keys[k].encode() for k in ("meta", "content", "tree"))
    with pytest.raises(GpgFailed):
        gpg.decrypt(slot, b"not the password")

    # 2. Config and snapshot are sealed with the meta key.
    config = json.loads(gpg.decrypt((repo.path / "config").read_bytes(), meta))
    assert config["haeedge_repository"] == 1 and config["id"] == doc["repository_id"]
    (snap_path,) = repo.objects("snapshots")
    snapshot = json.loads(gpg.decrypt(snap_path.read_bytes(), meta))
    assert snapshot["kind"] == "full" and snapshot["paths"] == [str(src)]
    assert hashlib.sha256(snap_path.read_bytes()).hexdigest() == snap_path.name  # named by content

    # 3. Pack headers (meta key) locate every blob.
    where = {}
    for pack_path in repo.objects("data"):
        pack = pack_path.read_bytes()
        assert hashlib.sha256(pack).hexdigest() == pack_path.name
        for e in parse_pack(pack, gpg, meta):
            where[e["id"]] = (pack_path, e)
    assert {e["type"] for _p, e in where.values()} == {0, 1}

    def blob(bid: bytes, key: bytes) -> bytes:
        pack_path, e = where[bid]
        sealed = pack_path.read_bytes()[e["offset"] : e["offset"] + e["length"]]
        plain = gpg.decrypt(sealed, key)
        if e["compression"] == 1:
            plain = zstd_decompress(plain)
        assert len(plain) == e["raw"]
        # The blob id is HMAC-SHA-256 of the plaintext under the blob_id key.
        assert hmac.digest(bytes.fromhex(keys["blob_id"]), plain, "sha256") == bid
        return plain

    # 4. Tree blobs (tree key) hold the file list as JSON lines.
    stream = b"".join(blob(bytes.fromhex(t), tree) for t in snapshot["tree"])
    entries = {e["path"]: e for e in map(json.loads, stream.splitlines())}
    rel = str(src).lstrip("/")
    assert entries[rel]["type"] == "dir"

    # 5. Data blobs (content key) reassemble the files, compressed or not.
    comps = set()
    for name, original in (("app.log", text), ("noise.bin", noise)):
        e = entries[f"{rel}/{name}"]
        assert e["size"] == len(original)
        data = b"".join(blob(bytes.fromhex(cid), content) for cid, _length in e["chunks"])
        assert data == original
        comps |= {where[bytes.fromhex(cid)][1]["compression"] for cid, _l in e["chunks"]}
    assert comps == {0, 1}, "both a zstd blob and a raw blob were exercised"

    # 6. The wrong key does not open a data blob.
    pack_path, e = next(v for v in where.values() if v[1]["type"] == 0)
    with pytest.raises(GpgFailed):
        gpg.decrypt(pack_path.read_bytes()[e["offset"] : e["offset"] + e["length"]], tree)

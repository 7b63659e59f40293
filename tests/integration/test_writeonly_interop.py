"""What write-only hosts write opens with the owner's key in GnuPG, sqop and pysequoia (keys made by those tools).

Data blobs are SEIPD behind one PKESK per owner certificate; tree blobs add a
SKESK (salted S2K carrying the session key) for the host's tree key. Each of
the three implementations must open both with the owner's secret key, and the
tree blob with the host tree key as a password. The repository is made and
written through the real CLI.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pysequoia
import pytest

from haeedge.crypto.openpgp import TAG_PKESK, TAG_SKESK, decrypt_message, esk_summary
from haeedge.repo.keys import host_tree_key
from haeedge.repo.pack import BLOB_DATA, BLOB_TREE
from tests.support.keys import OWNER_PASSPHRASE, Gpg, WriteOnly, make_owner


@dataclass
class Owner:
    name: str
    cert_file: Path
    secret_file: Path
    passphrase: str
    passphrase_file: Path
    fingerprint: str = ""


def _sqop(*args: str, input: bytes | None = None) -> bytes:
    exe = shutil.which("sqop")
    if exe is None:
        pytest.fail("sqop is not installed (apt-get install sqop)")
    proc = subprocess.run([exe, *args], input=input, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


@pytest.fixture(scope="module", params=["gpg-cv25519", "gpg-rsa3072", "sqop-cv25519"])
def owner_key(request, gpg, tmp_path_factory) -> Owner:  # noqa: F811
    d = tmp_path_factory.mktemp(request.param)
    if request.param.startswith("gpg"):
        k = make_owner(gpg, d, request.param, algo=request.param.split("-")[1])
        return Owner(request.param, k.cert_file, k.secret_file, k.passphrase, k.passphrase_file, k.fingerprint)
    secret = _sqop("generate-key", "--no-armor", f"{request.param} <{request.param}@example.org>")
    cert = _sqop("extract-cert", "--no-armor", input=secret)
    (d / "owner.pgp").write_bytes(cert)
    (d / "owner-secret.pgp").write_bytes(secret)
    (d / "empty.pass").write_text("")
    gpg.run("--import", input=secret)
    return Owner(request.param, d / "owner.pgp", d / "owner-secret.pgp", "", d / "empty.pass")


def test_writer_blobs_open_in_every_implementation(cli, owner_key, gpg, tmp_path):  # noqa: F811
    wo = WriteOnly(cli, owner_key)  # type: ignore[arg-type]
    wo.init("web1")
    src = tmp_path / "src"
    src.mkdir()
    content = b"".join(b"line %d of the payload\n" % i for i in range(5000))
    (src / "payload.txt").write_bytes(content)
    wo.backup("web1", src)

    # The owner restores through haeedge with the tool-made secret key.
    out = tmp_path / "out"
    wo.as_owner("restore", "latest", "--target", out).ok()
    assert (out / str(src).lstrip("/") / "payload.txt").read_bytes() == content

    with wo.open() as repo:
        blobs = {}
        for bid, loc in repo.index.iter_entries():
            sealed = bytes(repo.backend.get_range(f"data/{loc.pack_id[:2]}/{loc.pack_id}", loc.offset, loc.length))
            blobs.setdefault(loc.blob_type, (bid, loc, sealed))
        expected = {t: repo.decode_blob(bid, loc, sealed) for t, (bid, loc, sealed) in blobs.items()}
        stored = {t: decrypt_message(sealed, repo.keyring("content" if t == BLOB_DATA else "tree"))
                  for t, (_bid, _loc, sealed) in blobs.items()}
        tree_password = host_tree_key(repo.keys.tree, "web1").hex()
    data_msg, tree_msg = blobs[BLOB_DATA][2], blobs[BLOB_TREE][2]
    assert [t for t, _ in esk_summary(data_msg)] == [TAG_PKESK]
    assert [t for t, _ in esk_summary(tree_msg)] == [TAG_PKESK, TAG_SKESK]
    assert expected[BLOB_TREE].startswith(b'{"')

    # GnuPG: the owner's key (imported in the module's home) opens both; the tree key opens the tree blob.
    g: Gpg = gpg
    for t, msg in ((BLOB_DATA, data_msg), (BLOB_TREE, tree_msg)):
        assert g.decrypt(msg, passphrase=owner_key.passphrase).stdout == stored[t]
    assert g.decrypt(tree_msg, passphrase=tree_password).stdout == stored[BLOB_TREE]

    # sqop: the secret key file (and its password), or the tree key as a password.
    key_args = ["decrypt"]
    if owner_key.passphrase:
        key_args += ["--with-key-password", str(owner_key.passphrase_file)]
    for t, msg in ((BLOB_DATA, data_msg), (BLOB_TREE, tree_msg)):
        assert _sqop(*key_args, "--", str(owner_key.secret_file), input=msg) == stored[t]
    pwfile = tmp_path / "tree.pw"
    pwfile.write_text(tree_password)
    assert _sqop("decrypt", "--with-password", str(pwfile), input=tree_msg) == stored[BLOB_TREE]

    # pysequoia.
    tsk = pysequoia.Tsk.from_bytes(owner_key.secret_file.read_bytes())
    decryptor = tsk.decryptor(owner_key.passphrase) if owner_key.passphrase else tsk.decryptor()
    for t, msg in ((BLOB_DATA, data_msg), (BLOB_TREE, tree_msg)):
        assert pysequoia.decrypt(msg, decryptor=decryptor).bytes == stored[t]
    assert pysequoia.decrypt(tree_msg, passwords=[tree_password]).bytes == stored[BLOB_TREE]


def test_certificate_slot_and_records_open_in_sqop(cli, gpg, tmp_path):  # noqa: F811
    k = make_owner(gpg, tmp_path / "k", "slot-owner", passphrase=OWNER_PASSPHRASE)
    wo = WriteOnly(cli, k)
    wo.init("web1")
    with wo.open() as repo:
        meta = repo.keys.meta.hex()
        slot_id = repo.slot.slot_id
    slot = (cli.repo_path / "keys" / slot_id).read_bytes()
    out = _sqop("decrypt", "--with-key-password", str(k.passphrase_file), "--", str(k.secret_file), input=slot)
    assert b'"kind": "certificate"' in out and b'"content"' in out
    pw = tmp_path / "meta.pw"
    pw.write_text(meta)
    sealed = [p for p in (cli.repo_path / "keys").iterdir() if esk_summary(p.read_bytes())[0][1][2] == 1]
    plains = [_sqop("decrypt", "--with-password", str(pw), input=p.read_bytes()) for p in sealed]
    # the owner slot's and the writer slot's records, and the owner-signed trust manifest
    assert sum(b'"haeedge_key_record": 1' in p for p in plains) == 2
    assert sum(b'"haeedge_trust_manifest": 1' in p for p in plains) == 1

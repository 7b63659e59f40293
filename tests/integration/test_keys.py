"""Key management through the real CLI: key list/add/remove/passwd, --identity-file, S2K strength."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haeedge.crypto.openpgp import TAG_SKESK, esk_summary
from tests.support.keys import Gpg, make_owner

NEW_PW = b"a new password for the laptop"


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _keys(cli, **kw) -> list[dict]:
    return cli("--json", "key", "list", **kw).ok().json()["keys"]


def _slot_objects(repo_path: Path) -> list[Path]:
    """keys/ objects that are key slots (not key records), by their first packet."""
    out = []
    for p in sorted((repo_path / "keys").iterdir()):
        tag, body = esk_summary(p.read_bytes())[0]
        if tag != TAG_SKESK or body[2] != 1:  # records are SKESK with a salted (type 1) S2K
            out.append(p)
    return out


def test_fresh_repository_lists_one_owner_password_key(cli, repo):
    (k,) = _keys(cli)
    assert k["kind"] == "passphrase" and k["role"] == "owner" and k["in_use"] and k["registered"]
    assert len(k["id"]) == 64 and k["host"] and k["created"].endswith("Z") and k["signing_fingerprint"]
    text = cli("key", "list").ok().stdout
    assert k["id"][:12] in text and "passphrase" in text and "1 keys" in text


def test_add_password_both_open_then_remove(cli, fast_repo, tmp_path):
    new_pw = _write(tmp_path / "new.pw", NEW_PW + b"\n")
    r = cli("--json", "key", "add", "--new-password-file", new_pw, "--label", "laptop").ok()
    added = r.json()["id"]
    keys = _keys(cli)
    assert len(keys) == 2
    new = next(k for k in keys if k["id"] == added)
    assert new["label"] == "laptop" and new["kind"] == "passphrase" and new["role"] == "owner"
    assert not new["in_use"]
    # Both passwords open the same repository; with the new one, the new key is in use.
    cli("snapshots").ok()
    with_new = _keys(cli, env={"HAEEDGE_PASSWORD_FILE": str(new_pw)})
    assert next(k for k in with_new if k["in_use"])["id"] == added
    # The slot the key in use is refused; removing the other one works and its password stops opening.
    r = cli("key", "remove", next(k for k in keys if k["in_use"])["id"][:10])
    assert r.code == 2 and "in use" in r.stderr, r.describe()
    cli("key", "remove", added[:10]).ok()
    r = cli("snapshots", env={"HAEEDGE_PASSWORD_FILE": str(new_pw)})
    assert r.code == 12 and "wrong password" in r.stderr and "Traceback" not in r.stderr
    assert len(_keys(cli)) == 1


def test_last_key_able_to_read_cannot_be_removed(cli, fast_repo):
    (k,) = _keys(cli)
    r = cli("key", "remove", k["id"][:8])
    assert r.code == 2 and "last key that can read" in r.stderr, r.describe()
    r = cli("key", "remove", "zz")
    assert r.code == 2 and "not a key id" in r.stderr
    r = cli("key", "remove", "0" * 64)
    assert r.code == 2 and "no key slot" in r.stderr
    assert len(_keys(cli)) == 1


def test_passwd_replaces_the_key_in_use(cli, fast_repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    cli("backup", src).ok()
    (before,) = _keys(cli)
    new_pw = _write(tmp_path / "new.pw", NEW_PW)
    changed = cli("--json", "key", "passwd", "--new-password-file", new_pw).ok().json()
    assert changed["old"] == before["id"] and changed["new"] != before["id"]
    r = cli("snapshots")
    assert r.code == 12, r.describe()
    (after,) = _keys(cli, env={"HAEEDGE_PASSWORD_FILE": str(new_pw)})
    assert after["id"] == changed["new"]
    assert after["in_use"] and after["registered"] and after["signing_fingerprint"] == before["signing_fingerprint"]
    cli("restore", "latest", "--target", tmp_path / "out", env={"HAEEDGE_PASSWORD_FILE": str(new_pw)}).ok()
    assert len(_slot_objects(cli.repo_path)) == 1


def test_no_new_password_and_no_terminal_is_a_usage_error(cli, fast_repo):
    r = cli("key", "add")
    assert r.code == 2 and "--new-password-file" in r.stderr and "Traceback" not in r.stderr


def test_every_password_slot_uses_the_strongest_s2k(cli, repo, tmp_path):
    """docs/security.md: iterated+salted S2K, SHA-256, coded count 0xFF (65,011,712 bytes per guess)."""
    cli("key", "add", "--new-password-file", _write(tmp_path / "p2", NEW_PW)).ok()
    slots = _slot_objects(cli.repo_path)
    assert len(slots) == 2
    for p in slots:
        tag, body = esk_summary(p.read_bytes())[0]
        version, algo, s2k_type, hash_algo = body[0], body[1], body[2], body[3]
        count_byte = body[12]
        assert (tag, version, algo, s2k_type, hash_algo, count_byte) == (TAG_SKESK, 4, 9, 3, 8, 0xFF)
        assert len(body) == 13  # no encrypted session key: the S2K output is the key
        assert (16 + (count_byte & 15)) << ((count_byte >> 4) + 6) == 65_011_712


# ---------------------------------------------------------------------- OpenPGP certificates


def test_certificate_key_opens_with_identity_file(cli, fast_repo, gpg, owner, tmp_path):  # noqa: F811
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"read me with a secret key")
    cli("backup", src).ok()
    r = cli("--json", "key", "add", "--recipient-file", owner.cert_file, "--label", "yubikey").ok().json()
    assert r["kind"] == "certificate" and r["recipient_fingerprint"] == owner.fingerprint
    cert_key = next(k for k in _keys(cli) if k["id"] == r["id"])
    assert cert_key["kind"] == "certificate" and cert_key["recipient_fingerprint"] == owner.fingerprint
    # The protected secret key's passphrase comes from the password options; no repository password needed.
    env = {"HAEEDGE_PASSWORD_FILE": str(owner.passphrase_file)}
    out = tmp_path / "out"
    cli("--identity-file", owner.secret_file, "restore", "latest", "--target", out, env=env).ok()
    assert (out / str(src).lstrip("/") / "f").read_bytes() == b"read me with a secret key"
    listed = _keys(cli, env={**env, "HAEEDGE_IDENTITY_FILE": str(owner.secret_file)})
    assert next(k for k in listed if k["in_use"])["id"] == r["id"]
    cli("verify", "--read-data", env={**env, "HAEEDGE_IDENTITY_FILE": str(owner.secret_file)}).ok()
    # gpg itself opens the certificate slot with the owner's key (the slot is a PKESK message).
    slot = (cli.repo_path / "keys" / r["id"]).read_bytes()
    doc = json.loads(gpg.decrypt(slot, passphrase=owner.passphrase).stdout)
    assert doc["kind"] == "certificate" and set(doc["keys"]) == {"content", "tree", "meta", "blob_id"}


def test_identity_file_errors_are_clean(cli, fast_repo, gpg, owner, tmp_path):  # noqa: F811
    cli("key", "add", "--recipient-file", owner.cert_file).ok()
    bad_pw = _write(tmp_path / "bad", "not the key passphrase\n")
    r = cli("--identity-file", owner.secret_file, "snapshots", env={"HAEEDGE_PASSWORD_FILE": str(bad_pw)})
    assert r.code == 12 and "wrong passphrase" in r.stderr, r.describe()
    # A key that no slot is sealed to.
    other = make_owner(gpg, tmp_path / "other", "stranger", passphrase="")
    r = cli("--identity-file", other.secret_file, "snapshots")
    assert r.code == 12 and "no key slot matches" in r.stderr, r.describe()
    # A certificate is not a secret key; garbage is not a key; a missing file is a usage error.
    for path, words in ((owner.cert_file, "secret key"), (_write(tmp_path / "junk", b"\x99\x00garbage"), "secret"),
                        (tmp_path / "missing.asc", "No such file")):
        r = cli("--identity-file", path, "snapshots")
        assert r.code == 2 and words in r.stderr, r.describe()
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_identity_file_from_environment(cli, fast_repo, gpg, tmp_path):  # noqa: F811
    unprotected = make_owner(gpg, tmp_path / "k", "nopass", passphrase="")
    cli("key", "add", "--recipient-file", unprotected.cert_file).ok()
    # No password at all: the key is unprotected, and HAEEDGE_IDENTITY_FILE selects it.
    r = cli("snapshots", env={"HAEEDGE_IDENTITY_FILE": str(unprotected.secret_file)},
            unset=("HAEEDGE_PASSWORD_FILE",))
    assert r.code == 0, r.describe()


def test_rsa_certificate_key(cli, fast_repo, gpg, tmp_path):  # noqa: F811
    rsa = make_owner(gpg, tmp_path / "rsa", "rsa-owner", passphrase="rsa pass", algo="rsa3072")
    cli("key", "add", "--recipient-file", rsa.cert_file).ok()
    r = cli("--identity-file", rsa.secret_file, "key", "list",
            env={"HAEEDGE_PASSWORD_FILE": str(rsa.passphrase_file)})
    assert r.code == 0 and "certificate" in r.stdout, r.describe()


def test_bad_recipient_files_are_refused_cleanly(cli, fast_repo, gpg, tmp_path):  # noqa: F811
    # A signing-only certificate (no encryption subkey) cannot receive a key slot.
    g: Gpg = gpg
    g.run("--quick-gen-key", "signonly <s@example.org>", "ed25519", "cert,sign", "never", passphrase="")
    signonly = _write(tmp_path / "signonly.asc", g.export("=signonly <s@example.org>"))
    cases = [(signonly, "no usable encryption key"), (_write(tmp_path / "empty.asc", b""), "empty"),
             (_write(tmp_path / "junk.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n"), "recipient-file")]
    for path, words in cases:
        r = cli("key", "add", "--recipient-file", path)
        assert r.code == 2 and words in r.stderr, r.describe()
        assert "Traceback" not in r.stderr
    assert len(_keys(cli)) == 1


def test_certificate_slot_has_no_password_to_change(cli, fast_repo, owner, tmp_path):  # noqa: F811
    cli("key", "add", "--recipient-file", owner.cert_file).ok()
    env = {"HAEEDGE_IDENTITY_FILE": str(owner.secret_file), "HAEEDGE_PASSWORD_FILE": str(owner.passphrase_file)}
    r = cli("key", "passwd", "--new-password-file", _write(tmp_path / "n", NEW_PW), env=env)
    assert r.code == 2 and "not a password key" in r.stderr, r.describe()


@pytest.mark.parametrize("option", ["--writer", "--host"])
def test_add_option_combinations(cli, fast_repo, option):
    r = cli("key", "add", option, *(["web1"] if option == "--host" else []))
    assert r.code == 2 and "Traceback" not in r.stderr, r.describe()


def test_writer_in_a_password_repository_needs_an_owner_certificate(cli, fast_repo, owner, tmp_path):  # noqa: F811
    host_pw = _write(tmp_path / "host.pw", "password of web9\n")
    r = cli("key", "add", "--writer", "--host", "web9", "--new-password-file", host_pw)
    assert r.code == 2 and "--recipient-file" in r.stderr, r.describe()
    cli("key", "add", "--recipient-file", owner.cert_file).ok()
    cli("key", "add", "--writer", "--host", "web9", "--new-password-file", host_pw).ok()
    kinds = sorted((k["kind"], k["role"], k["host"]) for k in _keys(cli))
    assert [(k, r) for k, r, _h in kinds] == [("certificate", "owner"), ("passphrase", "owner"), ("writer", "writer")]
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"written by web9")
    r = cli("--json", "backup", "--host", "web9", src, env={"HAEEDGE_PASSWORD_FILE": str(host_pw)})
    assert r.code == 0, r.describe()
    # The owner's password reads what owners wrote, not what the writer wrote; the owner's secret key does.
    r = cli("restore", "latest", "--target", tmp_path / "no")
    assert r.code == 12 and "--identity-file" in r.stderr, r.describe()
    env = {"HAEEDGE_IDENTITY_FILE": str(owner.secret_file), "HAEEDGE_PASSWORD_FILE": str(owner.passphrase_file)}
    cli("restore", "latest", "--target", tmp_path / "yes", env=env).ok()
    assert (tmp_path / "yes" / str(src).lstrip("/") / "f").read_bytes() == b"written by web9"

"""Master keys and key slots.

A repository has four 256-bit secrets. Objects are sealed with OpenPGP SKESK
(salted S2K) using the lowercase hex of a secret as the passphrase, so that
``gpg --passphrase-file`` opens them with nothing but that hex string:

- ``content``: data blobs (file contents);
- ``tree``: tree blobs (file lists);
- ``meta``: config, pack headers, index, snapshots, locks;
- ``blob_id``: HMAC-SHA-256 key for blob ids (never a passphrase).

A key slot (``keys/<id>``) is an OpenPGP message holding these secrets as
JSON, sealed to a person's passphrase with iterated+salted S2K, or to an
OpenPGP certificate with PKESK.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field

from haeedge.crypto.openpgp import S2K_MAX_COUNT_BYTE, Keyring, NoMatchingKey, PassphraseSealer, decrypt_message
from haeedge.errors import FormatError, OpenPGPError, WrongPassword

SLOT_VERSION = 1
KEY_NAMES = ("content", "tree", "meta", "blob_id")


@dataclass
class MasterKeys:
    content: bytes | None
    tree: bytes | None
    meta: bytes
    blob_id: bytes
    role: str = "owner"
    extra: dict = field(default_factory=dict)

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32))

    def passphrase(self, name: str) -> bytes:
        key = getattr(self, name)
        if key is None:
            raise KeyError(name)
        return key.hex().encode()

    def to_json(self) -> dict:
        keys = {n: getattr(self, n).hex() for n in KEY_NAMES if getattr(self, n) is not None}
        return {"keys": keys, "role": self.role, **self.extra}

    @classmethod
    def from_json(cls, d: dict) -> MasterKeys:
        try:
            keys = d["keys"]
            got = {}
            for n in KEY_NAMES:
                v = keys.get(n)
                if v is not None:
                    b = bytes.fromhex(v)
                    if len(b) != 32:
                        raise ValueError(n)
                    got[n] = b
                else:
                    got[n] = None
            if got["meta"] is None or got["blob_id"] is None:
                raise ValueError("meta and blob_id keys are required")
            extra = {k: v for k, v in d.items() if k not in ("keys", "role", "haeedge_key_slot", "repository_id")}
            return cls(got["content"], got["tree"], got["meta"], got["blob_id"], str(d.get("role", "owner")), extra)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise FormatError(f"key slot holds malformed keys ({e})") from e


@dataclass
class KeySlot:
    """What a slot says about itself once opened."""

    slot_id: str
    repository_id: str
    keys: MasterKeys
    created: str
    host: str
    kind: str  # "passphrase" or "certificate"
    label: str = ""


def seal_slot_for_passphrase(keys: MasterKeys, repository_id: str, passphrase: bytes, *, label: str = "",
                             count_byte: int = S2K_MAX_COUNT_BYTE) -> bytes:
    payload = slot_payload(keys, repository_id, "passphrase", label)
    return PassphraseSealer(passphrase, count_byte=count_byte).seal(payload)


def slot_payload(keys: MasterKeys, repository_id: str, kind: str, label: str = "") -> bytes:
    doc = {
        "haeedge_key_slot": SLOT_VERSION,
        "repository_id": repository_id,
        "kind": kind,
        "label": label,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        **keys.to_json(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def open_slot(slot_id: str, message: bytes, keyring: Keyring) -> KeySlot | None:
    """Try to open one slot; None when the keyring does not fit it."""
    try:
        plain = decrypt_message(message, keyring, limit=1 << 20)
    except NoMatchingKey:
        return None
    except OpenPGPError as e:
        raise FormatError(f"key slot {slot_id[:12]} is damaged: {e}") from e
    try:
        doc = json.loads(plain)
        if not isinstance(doc, dict) or doc.get("haeedge_key_slot") != SLOT_VERSION:
            raise ValueError("not a haeedge key slot")
        return KeySlot(slot_id, str(doc["repository_id"]), MasterKeys.from_json(doc), str(doc.get("created", "")),
                       str(doc.get("host", "")), str(doc.get("kind", "passphrase")), str(doc.get("label", "")))
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"key slot {slot_id[:12]} is malformed: {e}") from e


def wrong_password() -> WrongPassword:
    return WrongPassword("wrong password or no key slot matches the given credentials",
                         hint="check --password-file / --password-command / HAEEDGE_PASSWORD_FILE")

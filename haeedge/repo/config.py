"""The ``config`` object: format version and repository-wide parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from haeedge.backends.s3policy import ObjectLock
from haeedge.chunking import TREE_PARAMS, ChunkerParams
from haeedge.errors import FormatError

FORMAT_VERSION = 1
KEY_SCHEME = "openpgp-skesk-salted-sha256-aes256-v1"
DEFAULT_PACK_SIZE = 16 << 20


@dataclass
class RepositoryConfig:
    repository_id: str
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    tree_chunker: ChunkerParams = TREE_PARAMS
    compression_level: int = 3  # 0 = off
    pack_size: int = DEFAULT_PACK_SIZE
    key_scheme: str = KEY_SCHEME
    version: int = FORMAT_VERSION
    #: S3 Object Lock retention every writer gives each object (``init --object-lock-days``); absent: none.
    object_lock: ObjectLock | None = None

    def to_bytes(self) -> bytes:
        extra = {"object_lock": self.object_lock.to_json()} if self.object_lock is not None else {}
        return json.dumps({
            **extra,
            "haeedge_repository": self.version,
            "id": self.repository_id,
            "chunker": self.chunker.to_json(),
            "tree_chunker": self.tree_chunker.to_json(),
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "pack_size": self.pack_size,
            "key_scheme": self.key_scheme,
        }, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RepositoryConfig:
        try:
            d = json.loads(data)
            version = d["haeedge_repository"]
            if version != FORMAT_VERSION:
                raise FormatError(f"repository format version {version} is not supported by this haeedge")
            comp = d["compression"]
            if comp.get("algorithm") != "zstd":
                raise ValueError("unknown compression")
            level = int(comp["level"])
            pack_size = int(d["pack_size"])
            if not (0 <= level <= 22) or not (1 << 20 <= pack_size <= 1 << 30):
                raise ValueError("parameter out of range")
            if d["key_scheme"] != KEY_SCHEME:
                raise ValueError(f"unknown key scheme {d['key_scheme']!r}")
            lock = ObjectLock.from_json(d["object_lock"]) if "object_lock" in d else None
            return cls(str(d["id"]), ChunkerParams.from_json(d["chunker"]), ChunkerParams.from_json(d["tree_chunker"]),
                       level, pack_size, d["key_scheme"], version, lock)
        except FormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FormatError(f"repository config is malformed: {e}") from e

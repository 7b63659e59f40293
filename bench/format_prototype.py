"""What another encryption format would buy (issue 16): format v1 against an RFC 9580 SEIPD v2 prototype.

Format v1 seals every blob as an OpenPGP message that GnuPG opens: SKESK (salted S2K) +
SEIPD v1, i.e. AES-256 in CFB mode with a SHA-1 modification detection code. CFB encryption
is serial and ``cryptography`` holds the GIL while it runs, so threads do not add cores.
RFC 9580's SEIPD v2 encrypts with an AEAD mode (OCB, GCM or EAX) in chunks. This script does
not write a repository: it times the cryptographic core of each on the same buffers, in one
thread and in two, so the gain can be weighed against its cost (GnuPG 2.2/2.4 does not read
SEIPD v2; Sequoia does).

Measured, per core and with two threads:
  v1-seal     haeedge's ``encrypt_literal`` (salted S2K + SEIPD v1), as backup runs it
  v1-open     ``decrypt_message`` of the same, as restore and verify run it
  v2-gcm      AES-256-GCM over 4 MiB chunks (SEIPD v2's core with GCM; framing is a few bytes)
  v2-ocb      AES-256-OCB3 the same way (RFC 9580's mandatory mode), if OpenSSL has it
and, separately, the fixed cost of one small message (1 KiB), which dominates many small files.

Usage: python bench/format_prototype.py [--mib 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haeedge.crypto.openpgp import Keyring, PassphraseSealer, decrypt_message

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESOCB3
except ImportError:  # older cryptography
    AESOCB3 = None  # type: ignore[assignment,misc]

CHUNK = 4 << 20
PASSPHRASE = os.urandom(32).hex().encode()


def _timed(fn: Callable[[], None], threads: int) -> float:
    """Wall seconds for ``threads`` threads each running ``fn`` once."""
    workers = [threading.Thread(target=fn) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def throughput(name: str, fn: Callable[[bytes], object], data: list[bytes], repeat: int) -> dict[str, float]:
    """MB/s of ``fn`` over every buffer, with one thread and with two (each doing all buffers)."""
    total = sum(len(b) for b in data)

    def run() -> None:
        for b in data:
            fn(b)

    one = statistics.median(_timed(run, 1) for _ in range(repeat))
    two = statistics.median(_timed(run, 2) for _ in range(repeat))
    return {"name": name, "one": total / one / 1e6, "two": 2 * total / two / 1e6}


def main(argv: list[str] | None = None) -> int:
    """Print a table of throughputs and small-message costs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="bytes to seal per pass (default 256 MiB)")
    p.add_argument("--repeat", type=int, default=3, help="passes; the median is printed")
    a = p.parse_args(argv)

    data = [os.urandom(CHUNK) for _ in range(max(1, a.mib * (1 << 20) // CHUNK))]
    sealer = PassphraseSealer(PASSPHRASE)
    keyring = Keyring(passphrases=[PASSPHRASE])
    sealed = [sealer.seal(b) for b in data]
    key = AESGCM.generate_key(bit_length=256)
    gcm = AESGCM(key)
    nonce = os.urandom(12)

    rows = [
        throughput("v1-seal (CFB + SHA-1 MDC)", sealer.seal, data, a.repeat),
        throughput("v1-open", lambda m: decrypt_message(m, keyring), sealed, a.repeat),
        throughput("v2-gcm seal", lambda b: gcm.encrypt(nonce, b, None), data, a.repeat),
    ]
    gcm_sealed = [gcm.encrypt(nonce, b, None) for b in data]
    rows.append(throughput("v2-gcm open", lambda c: gcm.decrypt(nonce, c, None), gcm_sealed, a.repeat))
    if AESOCB3 is not None:
        ocb = AESOCB3(key)
        ocb_sealed = [ocb.encrypt(nonce[:12], b, None) for b in data]
        rows.append(throughput("v2-ocb seal", lambda b: ocb.encrypt(nonce[:12], b, None), data, a.repeat))
        rows.append(throughput("v2-ocb open", lambda c: ocb.decrypt(nonce[:12], c, None), ocb_sealed, a.repeat))

    print(f"{sum(map(len, data)) >> 20} MiB in {CHUNK >> 20} MiB buffers, {a.repeat} passes, medians; "
          f"{os.cpu_count()} CPUs")
    print(f"{'':28s}{'1 thread MB/s':>15s}{'2 threads MB/s':>16s}{'2 / 1':>8s}")
    for r in rows:
        print(f"{r['name']:28s}{r['one']:15.0f}{r['two']:16.0f}{r['two'] / r['one']:8.2f}")

    small = [os.urandom(1024) for _ in range(20000)]
    t0 = time.perf_counter()
    small_sealed = [sealer.seal(b) for b in small]
    t_seal = (time.perf_counter() - t0) / len(small)
    t0 = time.perf_counter()
    for m in small_sealed:
        decrypt_message(m, keyring)
    t_open = (time.perf_counter() - t0) / len(small)
    t0 = time.perf_counter()
    for b in small:
        gcm.encrypt(nonce, b, None)
    t_gcm = (time.perf_counter() - t0) / len(small)
    print(f"\none 1 KiB blob: v1 seal {t_seal * 1e6:.1f} us, v1 open {t_open * 1e6:.1f} us, "
          f"AES-GCM seal {t_gcm * 1e6:.1f} us (20,000 blobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

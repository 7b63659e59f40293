"""Reading a big file through ``haeedge mount`` against ``haeedge restore`` of the same file.

Issue 14 asks that a sequential read of a 1 GiB file through the mount runs at no less
than half of restore's speed. Not part of the test suite (it takes minutes and needs
/dev/fuse); run it by hand as root or as a user allowed to use FUSE:

    python bench/mount_read.py                    # 1 GiB, scratch under /var/tmp
    python bench/mount_read.py --size-mib 256 --scratch /tmp/mb --keep

It makes an incompressible file, backs it up into a new local repository, then times
(1) ``restore`` of the snapshot into an empty directory (less the time any command takes to
open the repository, which the mount pays before the timed read) and (2) reading the file through
a mount with 1 MiB reads (like ``cat``), each after dropping the page cache when run as
root, and checks both copies against the source's SHA-256. Prints one JSON object and
exits 1 when the mount is slower than half of restore's speed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - t0


def drop_caches() -> None:
    if os.geteuid() == 0:
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass


def sha256_of(path: Path) -> tuple[str, float]:
    """Digest of a file read with 1 MiB reads, and the seconds the reading took."""
    h = hashlib.sha256()
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MIB)
            if not b:
                break
            h.update(b)
    return h.hexdigest(), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--scratch", help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--haeedge", default=shutil.which("haeedge") or "haeedge", help="the haeedge executable")
    args = ap.parse_args()

    work = Path(args.scratch or tempfile.mkdtemp(prefix="haeedge-mount-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    src, target, mnt = work / "src", work / "restore", work / "mnt"
    for d in (src, mnt):
        d.mkdir(exist_ok=True)
    (work / "password").write_bytes(b"benchmark password\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAEEDGE_")}
    env.update(HAEEDGE_REPOSITORY=str(work / "repo"), HAEEDGE_PASSWORD_FILE=str(work / "password"))
    exe = args.haeedge
    try:
        big = src / "big.bin"
        source_digest = hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(args.size_mib):
                block = os.urandom(MIB)
                source_digest.update(block)
                f.write(block)
        expected = source_digest.hexdigest()
        run([exe, "init"], env)
        backup_s = run([exe, "backup", str(src)], env)

        # What every command pays to open the repository (key derivation, index): restore's time
        # counts it, the timed read through the mount does not, so it is taken off restore's time.
        open_s = min(run([exe, "snapshots"], env) for _ in range(3))
        shutil.rmtree(target, ignore_errors=True)
        drop_caches()
        restore_s = run([exe, "restore", "latest", "--target", str(target)], env)
        restored = target / str(big).lstrip("/")
        restored_digest, _ = sha256_of(restored)
        shutil.rmtree(target)

        drop_caches()
        proc = subprocess.Popen([exe, "--json", "mount", str(mnt)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"mount did not come up: {proc.stderr.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.1)
            mounted_digest, mount_s = sha256_of(mnt / "latest" / str(big).lstrip("/"))
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _err = proc.communicate(timeout=60)
        stats = json.loads(out.decode().splitlines()[-1]) if out.strip() else {}
        size = args.size_mib * MIB
        restore_net_s = max(0.001, restore_s - open_s)
        result = {
            "size_mib": args.size_mib,
            "backup_s": round(backup_s, 2),
            "open_s": round(open_s, 2),
            "restore_s": round(restore_s, 2),
            "restore_mib_s": round(size / MIB / restore_net_s, 1),
            "mount_read_s": round(mount_s, 2),
            "mount_read_mib_s": round(size / MIB / mount_s, 1),
            "mount_vs_restore": round(restore_net_s / mount_s, 2),
            "restore_ok": restored_digest == expected,
            "mount_ok": mounted_digest == expected,
            "mount_stats": stats,
        }
        print(json.dumps(result, indent=2))
        ok = result["restore_ok"] and result["mount_ok"] and result["mount_vs_restore"] >= 0.5
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

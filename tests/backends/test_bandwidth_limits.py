"""--limit-upload / --limit-download: one budget for all transfer threads, on S3 and SFTP servers."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from haeedge.backends.ratelimit import TokenBucket

KIB = 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_token_bucket_holds_the_rate_over_many_takes():
    clock = FakeClock()
    bucket = TokenBucket(100 * KIB, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        bucket.take(20 * KIB)  # 1000 KiB at 100 KiB/s: 10 s, less the initial burst
    assert 10 - 0.25 - 1e-6 <= clock.now <= 10 + 1e-6
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_token_bucket_is_shared_by_threads():
    """Eight threads together stay at the rate: real time, so only a lower bound is asserted."""
    bucket = TokenBucket(400 * KIB)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [bucket.take(25 * KIB) for _ in range(4)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 800 KiB at 400 KiB/s: at least 2 s less the 0.25 s burst (one thread alone would also take 2 s;
    # eight unshared buckets would take 0.25 s).
    assert time.monotonic() - started >= 1.7


def _tree(root, size: int):
    root.mkdir()
    (root / "random.bin").write_bytes(os.urandom(size))  # incompressible: what is read is what is sent
    return root


def _timed(cli, *args, env):
    started = time.monotonic()
    r = cli(*args, env=env)
    return r, time.monotonic() - started


@pytest.mark.parametrize("server", ["s3", "sshd"])
def test_limits_slow_uploads_and_downloads_to_the_rate(server, request, cli, trees, tmp_path):
    srv = request.getfixturevalue(server)
    if server == "s3":
        env = {**srv.env, "HAEEDGE_REPOSITORY": srv.url_for(f"bw-{uuid.uuid4().hex[:12]}")}
    else:
        config = tmp_path / "haeedge.yaml"
        location = srv.url_for(str(tmp_path / "remote"))
        config.write_text(f"profiles:\n  fog:\n    repository: {location}\n    backend_options:\n"
                          f"      {location}: {{key_file: {srv.key_file}, known_hosts: {srv.known_hosts}, "
                          "use_agent: false}\n")
        env = {"HAEEDGE_CONFIG": str(config), "HAEEDGE_PROFILE": "fog", "HAEEDGE_REPOSITORY": location}
    src = _tree(tmp_path / "src", 3 << 20)
    cli("init", env=env).ok()
    # 3 MiB at 512 KiB/s: at least 6 s less the burst. Unlimited, it takes a fraction of that.
    r, took = _timed(cli, "--limit-upload", "512", "backup", src, env=env)
    assert r.code == 0, r.describe()
    assert took >= 5.0, f"backup of 3 MiB under a 512 KiB/s limit took only {took:.1f} s"
    target = tmp_path / "out"
    r, took = _timed(cli, "--limit-download", "512", "restore", "latest", "--target", target, env=env)
    assert r.code == 0, r.describe()
    assert took >= 5.0, f"restore of 3 MiB under a 512 KiB/s limit took only {took:.1f} s"
    trees.assert_same(src, trees.restored_path(target, src))


def test_limits_are_set_in_a_profile_and_checked(cli, fast_repo, tmp_path):
    config = tmp_path / "haeedge.yaml"
    config.write_text("profiles:\n  slow:\n    limit_upload: 0\n")
    r = cli("-c", config, "--profile", "slow", "snapshots")
    assert r.code == 2 and "limit_upload" in r.stderr and "at least 1" in r.stderr
    r = cli("--limit-upload", "-5", "snapshots")
    assert r.code == 2 and "--limit-upload" in r.stderr
    config.write_text("profiles:\n  slow:\n    limit_upload: 256\n")
    src = _tree(tmp_path / "src", 1 << 20)
    started = time.monotonic()
    cli("-c", config, "--profile", "slow", "backup", src).ok()
    # 1 MiB at 256 KiB/s (the limit holds on a local disk too): at least 4 s less the burst.
    assert time.monotonic() - started >= 3.5

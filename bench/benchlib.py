"""Shared helpers for the benchmarks in bench/: measured child processes and tool adapters.

Every tool command is run as a child process and measured the same way (wall clock, CPU
of the child from ``os.wait4``, peak RSS), so that haeedge, restic and borg are compared on
equal terms.  Nothing here imports haeedge: the benchmark must work before haeedge does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

# Environment variables that would change what the tools do (another repository, another
# password, another cache) are removed from the inherited environment.
_TOOL_ENV_PREFIXES = ("RESTIC_", "BORG_", "HAEEDGE_")


class BenchError(RuntimeError):
    """A benchmark step failed; the run must stop loudly instead of printing numbers."""


@dataclass
class Measurement:
    """Cost of one child process: wall and CPU seconds, peak RSS."""

    wall: float
    user: float
    sys: float
    maxrss_kib: int  # ru_maxrss from wait4: the largest single process of the tree
    tree_rss_peak_kib: int  # sampled sum of RSS over the process tree (counts shared pages twice)
    tree_pss_peak_kib: int  # sampled sum of PSS over the tree (shared pages split): used for workers
    procs_peak: int  # most processes seen at once in the tree
    returncode: int
    log: str

    @property
    def cpu(self) -> float:
        """User plus system seconds of the child and the children it waited for."""
        return self.user + self.sys

    @property
    def rss_mib(self) -> float:
        """Peak memory in MiB: ru_maxrss, or for a tool with worker processes the sampled
        peak of the tree's summed PSS if larger (summed RSS would count forked, shared pages
        once per process)."""
        kib = self.maxrss_kib
        if self.procs_peak > 1:
            kib = max(kib, self.tree_pss_peak_kib)
        return kib / 1024

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form including the derived values."""
        d = asdict(self)
        d["cpu"] = self.cpu
        d["rss_mib"] = self.rss_mib
        return d


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat (this kernel has no /proc/*/children)."""
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            out.setdefault(int(fields[1]), []).append(int(name))
    return out


def _rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_SIZE // 1024
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (shared pages divided among sharers)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


class _TreeSampler(threading.Thread):
    """Polls the summed RSS of the tree below pid (the launcher): wait4 sees one process only."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.pss_peak_kib = 0
        self.procs_peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sample until stopped (every interval seconds); short peaks between samples are missed."""
        while not self._stop_event.is_set():
            children = _children_map()
            pids = list(children.get(self.pid, ()))  # below the launcher: the tool's tree
            i = 0
            while i < len(pids):
                pids.extend(children.get(pids[i], ()))
                i += 1
            self.procs_peak = max(self.procs_peak, len(pids))
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(p) for p in pids))
            if len(pids) > 1:  # PSS costs a page-table walk: only when there are workers
                self.pss_peak_kib = max(self.pss_peak_kib, sum(_pss_kib(p) for p in pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Ask the sampler to finish and wait for it."""
        self._stop_event.set()
        self.join()


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The inherited environment without tool settings, plus this tool's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_TOOL_ENV_PREFIXES)}
    env.update(extra)
    return env


# The tools are started through this tiny launcher, not straight from the harness: on Linux
# a child's ru_maxrss starts at the high-water RSS of the address space it exec()s from, and
# subprocess forks (vfork) from the harness, whose peak (hundreds of MiB while it hashes or
# rewrites the corpus) would then be reported as the tool's peak.  The launcher is a fresh
# ``python -I -S`` of a few MiB; it forks, execs the tool, and reports the tool's own wait4
# rusage and wall time in a result file.
_LAUNCHER = r"""
import os, sys, time
res, out, err, cwd = sys.argv[1:5]
argv = sys.argv[5:]
fi = os.open(os.devnull, os.O_RDONLY)
fo = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
fe = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(fi, 0)
        os.dup2(fo, 1)
        os.dup2(fe, 2)
        if cwd:
            os.chdir(cwd)
        os.execvp(argv[0], argv)
    except BaseException as exc:
        os.write(2, ("launcher: cannot run %r: %s\n" % (argv[0], exc)).encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(res, "w") as fh:
    fh.write("%r %r %r %d %d\n" % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss,
                                    os.waitstatus_to_exitcode(status)))
"""


def run_measured(
    argv: list[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    name: str,
    cwd: Path | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> tuple[Measurement, str]:
    """Run argv, measure it, keep its output in log_dir/name.{out,err}; fail loudly on error."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path = log_dir / f"{name}.out"
    err_path = log_dir / f"{name}.err"
    res_path = log_dir / f"{name}.rusage"
    res_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(res_path), str(out_path), str(err_path)]
    proc = subprocess.Popen([*launcher, str(cwd or ""), *argv], env=env, stdin=subprocess.DEVNULL)
    sampler = _TreeSampler(proc.pid)
    sampler.start()
    proc.wait()
    sampler.stop()
    try:
        wall_s, user_s, sys_s, maxrss_s, rc_s = res_path.read_text().split()
    except (OSError, ValueError) as exc:
        raise BenchError(f"launcher for {shlex.join(argv)} failed (exit {proc.returncode}): {exc}") from exc
    m = Measurement(
        wall=float(wall_s),
        user=float(user_s),
        sys=float(sys_s),
        maxrss_kib=int(maxrss_s),
        tree_rss_peak_kib=sampler.peak_kib,
        tree_pss_peak_kib=sampler.pss_peak_kib,
        procs_peak=sampler.procs_peak,
        returncode=int(rc_s),
        log=str(out_path.with_suffix("")),
    )
    stdout = out_path.read_text(errors="replace")
    if m.returncode not in ok_codes:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise BenchError(f"{shlex.join(argv)} exited with {m.returncode}\n--- stderr tail ({err_path}) ---\n{tail}")
    return m, stdout


def last_json_object(text: str) -> dict[str, Any] | None:
    """The JSON summary a tool printed: the whole output, or its last JSON-object line."""
    text = text.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def dir_size(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of a tree, like ``du -sb`` and ``du -s``."""
    apparent = allocated = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            if not stat.S_ISDIR(st.st_mode):
                apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def read_tree(path: Path) -> int:
    """Read every regular file once so it sits in the page cache; returns bytes read."""
    total = 0
    buf = bytearray(MIB)
    view = memoryview(buf)
    for root, _dirs, files in os.walk(path):
        for n in files:
            p = os.path.join(root, n)
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            with open(p, "rb", buffering=0) as fh:
                while k := fh.readinto(view):
                    total += k
    return total


def drop_caches() -> None:
    """Write back dirty pages and drop the page, dentry and inode caches (needs root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def can_drop_caches() -> bool:
    """Whether this process may drop the kernel caches."""
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


Manifest = dict[str, tuple[Any, ...]]


def manifest(root: Path) -> Manifest:
    """Path -> (kind, mode, size, sha256) for every entry below root, for byte-exact checks."""
    out: Manifest = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", mode)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                out[rel] = ("f", mode, st.st_size, digest)
            else:
                out[rel] = ("o", stat.S_IFMT(st.st_mode), mode)
    return out


def compare_manifests(expected: Manifest, got: Manifest, *, what: str) -> None:
    """Raise BenchError listing the first differences if two trees are not identical."""
    if expected == got:
        return
    problems: list[str] = []
    for k in sorted(expected.keys() - got.keys())[:10]:
        problems.append(f"missing: {k}")
    for k in sorted(got.keys() - expected.keys())[:10]:
        problems.append(f"extra:   {k}")
    for k in sorted(expected.keys() & got.keys()):
        if expected[k] != got[k] and len(problems) < 30:
            problems.append(f"differs: {k}: expected {expected[k]} got {got[k]}")
    n_missing = len(expected.keys() - got.keys())
    n_extra = len(got.keys() - expected.keys())
    n_diff = sum(1 for k in expected.keys() & got.keys() if expected[k] != got[k])
    raise BenchError(
        f"RESTORE MISMATCH for {what}: {n_missing} missing, {n_extra} extra, {n_diff} differ\n" + "\n".join(problems)
    )


def rmtree(path: Path) -> None:
    """Remove a tree if it exists, including read-only entries a restore may have made."""
    if not path.exists() and not path.is_symlink():
        return

    def onerror(func: Any, p: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(p), 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
        func(p)

    shutil.rmtree(path, onerror=onerror)


# --------------------------------------------------------------------------- tools


@dataclass
class ToolContext:
    """Where one tool keeps its repository, cache and logs for one benchmark run."""

    base: Path  # per-tool directory for this run
    password_file: Path

    @property
    def repo(self) -> Path:
        """The tool's repository."""
        return self.base / "repo"

    @property
    def cache(self) -> Path:
        """The tool's private cache/config home, so runs never share state."""
        return self.base / "cache"

    @property
    def logs(self) -> Path:
        """stdout/stderr of every command."""
        return self.base / "logs"


@dataclass
class BackupResult:
    """A measured backup and the tool's own summary of it."""

    m: Measurement
    summary: dict[str, Any] | None
    new_data_chunks: int | None = None
    chunk_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Tool:
    """One backup program driven through its command line."""

    name = ""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self._n = 0

    def _log_name(self, op: str) -> str:
        self._n += 1
        return f"{self._n:02d}-{op}"

    def env(self) -> dict[str, str]:
        """Environment for this tool's commands."""
        raise NotImplementedError

    def run(
        self,
        op: str,
        argv: list[str],
        cwd: Path | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> tuple[Measurement, str]:
        """Run one of this tool's commands, measured and logged."""
        self.ctx.cache.mkdir(parents=True, exist_ok=True)
        return run_measured(
            argv,
            env=self.env(),
            log_dir=self.ctx.logs,
            name=self._log_name(op),
            cwd=cwd,
            ok_codes=ok,
        )

    def version(self) -> str:
        """Version string of the tool, or why it is unknown."""
        raise NotImplementedError

    def init(self) -> Measurement:
        """Create an encrypted repository."""
        raise NotImplementedError

    def backup(self, src: Path, label: str) -> BackupResult:
        """Back up src (absolute path) into a new snapshot."""
        raise NotImplementedError

    def restore_latest(self, target: Path) -> Measurement:
        """Restore the latest snapshot into the empty directory target."""
        raise NotImplementedError

    def restored_root(self, target: Path, src: Path) -> Path:
        """Where the tree backed up from src ends up below target after restore_latest."""
        return target / src.relative_to("/")

    def verify(self) -> Measurement:
        """Check the repository, reading and authenticating every data byte."""
        raise NotImplementedError


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (r.stdout or r.stderr).strip().splitlines()
    return text[0] if text and r.returncode == 0 else f"unknown (exit {r.returncode})"


class Haeedge(Tool):
    """haeedge: encryption always on, zstd level 3 by default."""

    name = "haeedge"
    cmd: ClassVar[list[str]] = ["haeedge"]  # set from --haeedge-cmd

    def env(self) -> dict[str, str]:
        """Private XDG cache so runs do not share haeedge state."""
        return clean_env({"XDG_CACHE_HOME": str(self.ctx.cache)})

    def _argv(self, *args: str) -> list[str]:
        return [
            *self.cmd,
            "-r",
            str(self.ctx.repo),
            "--password-file",
            str(self.ctx.password_file),
            *args,
        ]

    def version(self) -> str:
        """``haeedge --version`` if the CLI has it."""
        return _version([*self.cmd, "--version"])

    def init(self) -> Measurement:
        """``haeedge init``."""
        return self.run("init", self._argv("init"))[0]

    def backup(self, src: Path, label: str) -> BackupResult:
        """``haeedge backup SRC --json``; new chunks from data_blobs or blobs_added if reported."""
        m, out = self.run(f"backup-{label}", self._argv("backup", str(src), "--json"))
        summary = last_json_object(out)
        res = BackupResult(m, summary)
        if summary is not None:
            for key in ("data_blobs_added", "data_blobs", "blobs_added"):
                if isinstance(summary.get(key), int):
                    res.new_data_chunks = summary[key]
                    res.chunk_note = f"haeedge --json {key}" + (
                        " (may include tree blobs)" if key == "blobs_added" else ""
                    )
                    break
        return res

    def restore_latest(self, target: Path) -> Measurement:
        """``haeedge restore latest --target DIR`` (absolute paths below DIR)."""
        return self.run("restore", self._argv("restore", "latest", "--target", str(target)))[0]

    def snapshots(self) -> Measurement:
        """``haeedge snapshots --json``: must not grow with the number of packs."""
        return self.run("snapshots", self._argv("snapshots", "--json"))[0]

    def verify(self) -> Measurement:
        """``haeedge verify --read-data``."""
        return self.run("verify", self._argv("verify", "--read-data"))[0]


class Restic(Tool):
    """restic 0.14: repository format 2 (compression), --compression auto."""

    name = "restic"

    def env(self) -> dict[str, str]:
        """Password through RESTIC_PASSWORD_FILE, private cache directory."""
        return clean_env(
            {
                "RESTIC_PASSWORD_FILE": str(self.ctx.password_file),
                "RESTIC_CACHE_DIR": str(self.ctx.cache),
            }
        )

    def version(self) -> str:
        """``restic version``."""
        return _version(["restic", "version"])

    def init(self) -> Measurement:
        """``restic init --repository-version 2``."""
        return self.run(
            "init",
            ["restic", "-r", str(self.ctx.repo), "init", "--repository-version", "2"],
        )[0]

    def backup(self, src: Path, label: str) -> BackupResult:
        """``restic backup --compression auto --json``; new chunks = summary data_blobs."""
        m, out = self.run(
            f"backup-{label}",
            [
                "restic",
                "-r",
                str(self.ctx.repo),
                "backup",
                "--compression",
                "auto",
                "--json",
                str(src),
            ],
        )
        summary = last_json_object(out)
        res = BackupResult(m, summary)
        if summary is not None and isinstance(summary.get("data_blobs"), int):
            res.new_data_chunks = summary["data_blobs"]
            res.chunk_note = "restic summary data_blobs"
        return res

    def restore_latest(self, target: Path) -> Measurement:
        """``restic restore latest --target DIR`` (absolute paths below DIR)."""
        return self.run(
            "restore",
            [
                "restic",
                "-r",
                str(self.ctx.repo),
                "restore",
                "latest",
                "--target",
                str(target),
            ],
        )[0]

    def verify(self) -> Measurement:
        """``restic check --read-data``."""
        return self.run("verify", ["restic", "-r", str(self.ctx.repo), "check", "--read-data"])[0]


class Borg(Tool):
    """BorgBackup 1.2 (Debian's): repokey-blake2 encryption, --compression zstd,3."""

    name = "borg"
    #: The command that runs this borg.
    exe: list[str] = ["borg"]
    # borg exits 1 for warnings (e.g. a file changed while read); the restore check
    # still catches any data that a warning would have lost.
    ok = (0, 1)

    def __init__(self, ctx: ToolContext) -> None:
        super().__init__(ctx)
        self._archives: list[str] = []
        self._unique_chunks: int | None = None

    def env(self) -> dict[str, str]:
        """Password through BORG_PASSCOMMAND (never argv), private base dir for cache/keys."""
        return clean_env(
            {
                "BORG_PASSCOMMAND": shlex.join(["cat", str(self.ctx.password_file)]),
                "BORG_BASE_DIR": str(self.ctx.cache),
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
                "BORG_DISPLAY_PASSPHRASE": "no",
            }
        )

    def version(self) -> str:
        """``borg --version``."""
        return _version([*self.exe, "--version"])

    def init(self) -> Measurement:
        """``borg init --encryption repokey-blake2``."""
        return self.run(
            "init",
            [*self.exe, "init", "--encryption", "repokey-blake2", str(self.ctx.repo)],
        )[0]

    def backup(self, src: Path, label: str) -> BackupResult:
        """``borg create --compression zstd,3 --json``; new chunks = delta of unique chunks."""
        name = f"{label}-{len(self._archives)}"
        m, out = self.run(
            f"backup-{label}",
            [
                *self.exe,
                "create",
                "--json",
                "--compression",
                "zstd,3",
                f"{self.ctx.repo}::{name}",
                str(src),
            ],
            ok=self.ok,
        )
        self._archives.append(name)
        summary = last_json_object(out)
        res = BackupResult(m, summary)
        try:
            unique = int(summary["cache"]["stats"]["total_unique_chunks"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            unique = None
        if unique is not None and self._unique_chunks is not None:
            # Every new archive also stores a new archive-metadata chunk and, when a file
            # changed, a new item-stream chunk: for a one-file tree that is exactly 2.
            res.new_data_chunks = max(0, unique - self._unique_chunks - 2)
            res.chunk_note = "borg delta of total_unique_chunks minus 2 metadata chunks"
        self._unique_chunks = unique
        return res

    def restore_latest(self, target: Path) -> Measurement:
        """``borg extract REPO::latest`` with cwd = target (paths stored without the leading /)."""
        if not self._archives:
            raise BenchError("borg: nothing to restore")
        return self.run(
            "restore",
            [*self.exe, "extract", f"{self.ctx.repo}::{self._archives[-1]}"],
            cwd=target,
            ok=self.ok,
        )[0]

    def verify(self) -> Measurement:
        """``borg check --verify-data``."""
        return self.run("verify", [*self.exe, "check", "--verify-data", str(self.ctx.repo)], ok=self.ok)[0]


class Borg14(Borg):
    """BorgBackup 1.4 from PyPI, in its own virtual environment (bench/install_borg14.sh).

    The same commands and settings as borg 1.2; found as ``$BORG14``, ``bench/.borg14/bin/borg``,
    ``/opt/borg14/bin/borg`` or ``borg14`` on PATH, in that order.
    """

    name = "borg14"
    exe = ["borg14"]


def find_borg14() -> str | None:
    """The borg 1.4 executable, or None."""
    candidates = [os.environ.get("BORG14", ""), str(Path(__file__).resolve().parent / ".borg14" / "bin" / "borg"),
                  "/opt/borg14/bin/borg"]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return shutil.which("borg14")


TOOLS: dict[str, type[Tool]] = {"haeedge": Haeedge, "restic": Restic, "borg": Borg, "borg14": Borg14}


def tool_missing(name: str) -> str | None:
    """A clear message if a tool cannot be run here, else None."""
    if name == "haeedge":
        exe = Haeedge.cmd[0]
        hint = (
            "Install it from the checkout with `pip install -e .` (then `haeedge` is a "
            "console script), pass --haeedge-cmd 'python -m haeedge.cli' or similar, or "
            "leave it out with --tools restic,borg."
        )
        if shutil.which(exe) is None:
            return f"haeedge is not installed here (no {exe!r} on PATH). {hint}"
        try:
            r = subprocess.run(
                [*Haeedge.cmd, "--help"],
                check=False,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"haeedge CLI {shlex.join(Haeedge.cmd)!r} does not run ({exc}). {hint}"
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip()[-800:]
            return f"haeedge CLI {shlex.join(Haeedge.cmd)!r} --help exited with {r.returncode}:\n{tail}\n{hint}"
        return None
    if name == "borg14":
        exe = find_borg14()
        if exe is None:
            return ("borg 1.4 is not installed: run bench/install_borg14.sh (a virtual environment in "
                    "bench/.borg14 with borgbackup 1.4 from PyPI), set BORG14=/path/to/borg, or leave it "
                    "out with --tools")
        Borg14.exe = [exe]
        said = _version([*Borg14.exe, "--version"])
        if not said.startswith("borg 1.4"):
            return f"{exe} is not borg 1.4 (it says {said!r})"
        return None
    if shutil.which(name) is None:
        pkg = "borgbackup" if name == "borg" else name
        return f"{name} is not installed; install the Debian package: apt-get install {pkg}"
    return None


def checkout_state() -> str:
    """Commit of this checkout and whether it has uncommitted changes (read-only git calls).

    haeedge is installed editable, so a benchmark measures whatever the tree holds while it
    runs; the report names it so that numbers can be tied to code.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return "no commit yet"
        dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
    except OSError as exc:
        return f"unknown ({exc})"
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def write_password(path: Path) -> None:
    """A fixed benchmark password in a 0600 file (tools read it from there, never argv)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("haeedge-bench-password")  # no newline: nothing for a tool to strip

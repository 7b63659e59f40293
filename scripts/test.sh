#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages + Python packages
# in .venv) and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# fuse3 + libfuse3-3: the mount tests mount for real (they need /dev/fuse, which CI has as root).
DEB_PACKAGES=(gnupg sqop openssh-server openssh-client postgresql zstd fuse3 libfuse3-3)
if command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"

ruff check haeedge tests bench

set +e
# Two workers: the suite is mostly waiting on real servers and subprocesses.
python -m pytest -p no:cacheprovider -q -n "${HAEEDGE_TEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"

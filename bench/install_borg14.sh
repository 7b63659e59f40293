#!/usr/bin/env bash
# borg 1.4 from PyPI for bench/run.py's borg14 column, in its own virtual environment
# (bench/.borg14), beside Debian's borg 1.2. Building it needs the headers of the
# libraries it links (Debian packages below).
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    missing=()
    for p in liblz4-dev libzstd-dev libxxhash-dev libacl1-dev libssl-dev pkg-config; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
[ -x .borg14/bin/python ] || python3 -m venv .borg14
.borg14/bin/python -m pip install -q 'borgbackup>=1.4,<1.5'
.borg14/bin/borg --version

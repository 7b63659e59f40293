#!/usr/bin/env bash
# Set haeedge up in .venv and run a real backup -> verify -> restore round trip
# on a local-disk repository in a scratch directory, then compare the trees.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q -e . >/dev/null
HAEEDGE="$PWD/.venv/bin/haeedge"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/haeedge-quickstart.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
umask 077
head -c 32 /dev/urandom | base64 > "$WORK/password"
export HAEEDGE_REPOSITORY="$WORK/repo" HAEEDGE_PASSWORD_FILE="$WORK/password"

# Something real to back up: the Python standard library this haeedge runs on.
SRC="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"

echo "== init";    "$HAEEDGE" init
echo "== backup";  "$HAEEDGE" backup "$SRC" --tag quickstart
echo "== backup (nothing changed: incremental, reads nothing)"; "$HAEEDGE" backup "$SRC" --tag quickstart
echo "== snapshots"; "$HAEEDGE" snapshots
echo "== verify --read-data"; "$HAEEDGE" verify --read-data
echo "== restore"; "$HAEEDGE" restore latest --target "$WORK/restore"
echo "== compare"
diff -r --no-dereference "$SRC" "$WORK/restore$SRC"
echo "OK: restored tree is identical to $SRC"

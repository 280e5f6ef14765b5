#!/usr/bin/env bash
# py-tools.sh: the Python data tools the tests compare against or write fixtures with, in one
# cached virtualenv: pyarrow (nested Parquet columns, reference statistics), duckdb (reference
# statistics), deltalake (Delta Lake tables with removed files) and pyiceberg (Iceberg tables
# in a local SQLite catalog).
#
#   scripts/py-tools.sh install   create the virtualenv (once)
#   scripts/py-tools.sh python    install if needed, then print the venv's python path on stdout
#
# test.sh exports that path to the tests as TH_TEST_PYTHON.
#
# Environment:
#   TH_CACHE        cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/truthound); the virtualenv is
#                   $TH_CACHE/venv-pytools
#   PY_TOOLS_PKGS   pip requirements (default: the pinned list below)
set -euo pipefail

CACHE=${TH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/truthound}
VENV=$CACHE/venv-pytools
PY_TOOLS_PKGS=${PY_TOOLS_PKGS:-"pyarrow==26.0.1 duckdb==2.0.1 deltalake==1.6.6 pyiceberg[sql-sqlite]==0.12.0"}
MARKER=$VENV/.installed

SERVICE=py-tools
. "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

venv_ok() {
  [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$PY_TOOLS_PKGS" ] &&
    "$VENV/bin/python" -c "import pyarrow, duckdb, deltalake, pyiceberg.catalog.sql" >/dev/null 2>&1
}

cmd_install() { venv_install pytools "$PY_TOOLS_PKGS"; }

case ${1:-} in
  install) cmd_install ;;
  python)
    cmd_install
    printf '%s\n' "$VENV/bin/python" ;;
  *)
    echo "usage: $0 {install|python}" >&2
    exit 64 ;;
esac

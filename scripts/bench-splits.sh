#!/usr/bin/env bash
# bench-splits.sh: splitting inside files, measured (not a test; CI does not run it).
#
#   scripts/bench-splits.sh [ROWS]       default: 10000000
#   env: RUNS (default 3)  BENCH_DATA (default ~/.cache/truthound/bench-splits)
#        TH (a th binary to time instead of building the release one)
#
# One file is the most common input there is (one big export, one big Parquet file). This
# generates, once, a ROWS-row CSV (about 100 bytes a row: ~1 GB at 10M rows) and the same rows as
# a Parquet file of a single row group (scripts/bench_splits.py, with DuckDB and pyarrow from
# scripts/py-tools.sh), then times `th profile --workers 1` and `--workers 2` (release build) on
# each, which cut the file into byte ranges (CSV) or row ranges of the one row group (Parquet),
# and DuckDB's SUMMARIZE with 1 and 2 threads on the same files in the same run: wall seconds
# (median of RUNS after a warm-up), peak RSS, and the 1 -> 2 speed-up, as a markdown table.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/.." && pwd))
ROWS=${1:-10000000}
RUNS=${RUNS:-3}
for n in "$ROWS" "$RUNS"; do
  case $n in '' | *[!0-9]*) echo "bench-splits: not a positive integer: '$n'" >&2; exit 64 ;; esac
done
DATA=${BENCH_DATA:-$HOME/.cache/truthound/bench-splits}/$ROWS

say() { printf '\n==> %s\n' "$*" >&2; }
cd "$ROOT"

say "python with pyarrow and duckdb (scripts/py-tools.sh)"
PY=$("$HERE/py-tools.sh" python)

say "data: $ROWS rows into $DATA"
"$PY" "$HERE/bench_splits.py" gen "$ROWS" "$DATA"

if [ -z "${TH:-}" ]; then
  say "cargo build --release -p truthound-cli"
  cargo build --release -p truthound-cli
  TARGET=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  TH=$TARGET/release/th
fi
[ -x "$TH" ] || { echo "bench-splits: $TH was not built" >&2; exit 1; }

say "th and DuckDB: $ROWS rows, $RUNS runs"
echo "scripts/bench-splits.sh $ROWS (RUNS=$RUNS, $(nproc) cores, $(date -u +%Y-%m-%d))"
"$PY" "$HERE/bench_splits.py" run "$TH" "$DATA" "$RUNS"

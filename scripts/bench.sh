#!/usr/bin/env bash
# bench.sh: the benchmark command (not a test; CI does not run it).
#
#   scripts/bench.sh [ROWS ...]          default: 1000000 10000000
#   scripts/bench.sh --splits [ROWS]     one big CSV and one single-row-group Parquet file, 1 and 2
#                                        workers, against DuckDB (scripts/bench-splits.sh)
#   env: THREADS (default 2)  RUNS (default 3)  BENCH_DIR  BENCH_DATA  BENCH_VERBOSE=1
#
# Times `th profile` against the tools users would otherwise reach for (polars, DuckDB, truthound;
# ../shared/bench/anchors.py), in the same run and with the same thread count, because the
# machines are shared and noisy: only ratios within one run mean something. Then checks each th
# profile against the exact statistics of the data set (scripts/check_truth.py).
#
# For each ROWS: the data set is generated once into ${BENCH_DATA:-$HOME/.cache/truthound/bench}/ROWS
# (../shared/bench/gen_data.py, 8 parts) and reused; anchors.py and scripts/bench_th.py print
# `tool median_s min_s max_s peak_rss_mib` tables; a markdown table with ratios to the decode
# floor and to DuckDB follows. All tables are repeated at the end.
#
# Needs ../shared/bench (beside the checkout, or BENCH_DIR): exit 2 if it is absent.
# Exit 1 if a th run or a truth check failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "${1:-}" = --splits ]; then
  shift
  exec "$HERE/bench-splits.sh" "$@"
fi
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/.." && pwd))
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
DATA_ROOT=${BENCH_DATA:-$HOME/.cache/truthound/bench}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
NPARTS=8

if [ $# -eq 0 ]; then set -- 1000000 10000000; fi
for n in "$@" "$THREADS" "$RUNS"; do
  case $n in '' | *[!0-9]*) echo "bench: not a positive integer: '$n'" >&2; exit 64 ;; esac
done

for f in setup.sh gen_data.py anchors.py; do
  if [ ! -f "$BENCH_DIR/$f" ]; then
    echo "bench: $BENCH_DIR/$f not found: the benchmark needs ../shared/bench beside the checkout" >&2
    echo "       (or BENCH_DIR=/path/to/bench); nothing was run." >&2
    exit 2
  fi
done
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

say() { printf '\n==> %s\n' "$*" >&2; }
cd "$ROOT"

say "python with polars, duckdb, truthound ($BENCH_DIR/setup.sh)"
PY=$(bash "$BENCH_DIR/setup.sh")
echo "$PY" >&2

say "cargo build --release -p truthound-cli"
cargo build --release -p truthound-cli
TARGET=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
TH=$TARGET/release/th
[ -x "$TH" ] || { echo "bench: $TH was not built" >&2; exit 1; }

OUT=$(mktemp -d "${TMPDIR:-/tmp}/th-bench.XXXXXX")
SUMMARY=$OUT/summary.md
FAILED=0
: >"$SUMMARY"

for rows in "$@"; do
  D=$DATA_ROOT/$rows
  R=$OUT/$rows
  mkdir -p "$R"
  # truth.json is written last by gen_data.py: without it the data set is incomplete
  if [ -f "$D/data.parquet" ] && [ -f "$D/truth.json" ]; then
    say "data: $D (reused)"
  else
    say "data: generating $rows rows into $D (once)"
    mkdir -p "$DATA_ROOT"
    tmp=$D.tmp.$$
    rm -rf "$tmp"
    "$PY" "$BENCH_DIR/gen_data.py" "$rows" "$tmp" "$NPARTS" >&2
    rm -rf "$D"
    mv "$tmp" "$D"
  fi

  say "anchors: $rows rows, $THREADS threads, $RUNS runs"
  "$PY" "$BENCH_DIR/anchors.py" "$D/data.parquet" "$RUNS" "$THREADS" | tee "$R/anchors.txt"

  say "th: $rows rows, $THREADS threads, $RUNS runs"
  rc=0
  "$PY" "$HERE/bench_th.py" run "$TH" "$D" "$RUNS" "$THREADS" "$R" | tee "$R/th.txt" || rc=$?
  [ "$rc" -eq 0 ] || FAILED=1

  python3 "$HERE/bench_th.py" table "$rows rows, $THREADS threads, median of $RUNS runs" \
    "$R/anchors.txt" "$R/th.txt" | tee -a "$SUMMARY"

  for prof in th th-no-patterns th-parts; do
    [ -f "$R/$prof.json" ] || continue
    say "truth check: $prof.json vs $D/truth.json"
    rc=0
    python3 "$HERE/check_truth.py" "$R/$prof.json" "$D/truth.json" >"$R/$prof.truth.txt" 2>&1 || rc=$?
    if [ "${BENCH_VERBOSE:-0}" = 1 ]; then
      cat "$R/$prof.truth.txt"
    else
      grep -v '^pass' "$R/$prof.truth.txt" || true
    fi
    printf -- '- truth check %s (%s rows): %s\n' "$prof" "$rows" "$(tail -n 1 "$R/$prof.truth.txt")" >>"$SUMMARY"
    [ "$rc" -eq 0 ] || FAILED=1
  done
done

say "summary (profiles and logs in $OUT)"
cat "$SUMMARY"
exit "$FAILED"

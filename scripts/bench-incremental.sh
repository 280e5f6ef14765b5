#!/usr/bin/env bash
# bench-incremental.sh: times an incremental `th profile --cache` against a full run (not a test;
# CI does not run it).
#
#   scripts/bench-incremental.sh [ROWS_PER_FILE]     default 100000
#   env: TH (the th binary; default: target/release/th, built if missing), THREADS (default 2),
#        BENCH_DATA (default ~/.cache/truthound/bench-incremental)
#
# Writes 20 CSV files of ROWS_PER_FILE rows and 8 mixed columns (Python's standard library only,
# deterministic), then: a full run without a cache; a first run with an empty cache (every task
# runs and is cached); 2 files rewritten, 1 added, 1 deleted; the incremental run (3 tasks run, 17
# reused) and a full run of the changed dataset without a cache. Prints each wall time and checks
# that the incremental profile's exact figures equal the full run's.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROWS=${1:-100000}
THREADS=${THREADS:-2}
DATA=${BENCH_DATA:-$HOME/.cache/truthound/bench-incremental}/$ROWS
case $ROWS in '' | *[!0-9]*) echo "bench-incremental: not a positive integer: '$ROWS'" >&2; exit 64 ;; esac

if [ -z "${TH:-}" ]; then
  TH=${CARGO_TARGET_DIR:-$ROOT/target}/release/th
  [ -x "$TH" ] || cargo build --release -p truthound-cli
fi

gen() { # gen DIR N SHIFT: file N of the dataset, its ids shifted by SHIFT
  python3 - "$1" "$2" "$3" "$ROWS" <<'EOF'
import random, sys
d, n, shift, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(n * 1000003 + shift)
cities = ["Oslo", "Lima", "Pune", "Kyiv", "Reno", "Bern", "Doha", "Nice"]
with open(f"{d}/part-{n:02d}.csv", "w") as f:
    f.write("id,user,city,amount,score,flag,day,email\n")
    for i in range(rows):
        k = n * rows + i + shift
        amount = "" if i % 97 == 0 else f"{r.uniform(0, 5000):.2f}"
        f.write(f"{k},u{r.randrange(50000)},{r.choice(cities)},{amount},{r.gauss(50, 15):.4f},"
                f"{'true' if r.random() < 0.3 else 'false'},2026-{1 + i % 12:02d}-{1 + i % 28:02d},"
                f"user{r.randrange(100000)}@example.com\n")
EOF
}

rm -rf "$DATA.work" && mkdir -p "$DATA.work/data"
if [ ! -d "$DATA/data" ]; then
  mkdir -p "$DATA/data.tmp"
  for n in $(seq 0 19); do gen "$DATA/data.tmp" "$n" 0; done
  mv "$DATA/data.tmp" "$DATA/data"
fi
cp "$DATA"/data/*.csv "$DATA.work/data/"
W=$DATA.work
D=$W/data
C=$W/cache

timed() { # timed NAME ARGS...: runs th profile ARGS, prints NAME and its wall seconds
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$TH" profile "$@" --workers "$THREADS" --json >"$W/$name.json" 2>"$W/$name.err"
  t1=$(date +%s.%N)
  printf '%-40s %6.2f s  %s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$(grep -o 'reused.*' "$W/$name.err" || true)"
}

echo "20 files x $ROWS rows ($(du -sh "$D" | cut -f1) CSV), $THREADS threads, $(nproc) cores"
timed full "$D"
timed first-with-empty-cache "$D" --cache "$C"
gen "$D" 3 7777777
gen "$D" 11 8888888
gen "$D" 20 0
rm "$D/part-05.csv"
timed incremental "$D" --cache "$C"
timed full-after-change "$D"
python3 - "$W/incremental.json" "$W/full-after-change.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["partitioning"]["tasks_reused"] == 17, a["partitioning"]
assert a["row_count"] == b["row_count"]
# The figures that are exact at any size (past 10,000 distinct values counts and top values come
# from sketches, merged here in another grouping; cli/tests/incremental.rs checks them exactly).
cb = {c["name"]: c for c in b["columns"]}
for c in a["columns"]:
    for k in ("null_count", "min", "max", "empty_string_count", "min_length", "max_length"):
        assert c.get(k) == cb[c["name"]].get(k), (c["name"], k)
print("incremental profile: exact figures equal the full run's;", a["row_count"], "rows")
EOF

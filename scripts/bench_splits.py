#!/usr/bin/env python3
"""Splitting inside files, measured (scripts/bench-splits.sh runs this).

Usage:
  PY scripts/bench_splits.py gen ROWS DIR     one CSV and one single-row-group Parquet file
  PY scripts/bench_splits.py run TH DIR RUNS  time th (1 and 2 workers) and DuckDB on both

gen: DIR/data.csv (about 100 bytes a row) written by DuckDB from a deterministic query (values
are hashes of the row number: the same bytes on every machine), then DIR/data.parquet from it
with pyarrow, as one row group (row_group_size = ROWS), with a page index. Skipped when both
files and DIR/rows (written last) say ROWS.

run: one warm-up, then RUNS counted runs of each command, each its own process (os.wait4:
whole-process wall seconds and peak RSS); prints a markdown table with the 1 -> 2 worker
speed-up of each th pair. th runs with --workers N (N tasks at once) and its default
--partitions (twice the workers), so the one file is cut into row ranges (Parquet) or byte
ranges (CSV); DuckDB runs SUMMARIZE with threads = N.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time


def gen(rows: int, d: str) -> int:
    import duckdb
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    os.makedirs(d, exist_ok=True)
    marker = os.path.join(d, "rows")
    csv, parquet = os.path.join(d, "data.csv"), os.path.join(d, "data.parquet")
    if os.path.exists(marker) and open(marker).read().strip() == str(rows):
        if os.path.exists(csv) and os.path.exists(parquet):
            print(f"bench_splits: {d} holds {rows} rows (reused)", file=sys.stderr)
            return 0
    for f in (marker, csv, parquet):
        if os.path.exists(f):
            os.remove(f)
    con = duckdb.connect()
    # hash(i, k) is deterministic: the data set is the same on every run and machine.
    con.execute(
        f"""
        COPY (
          SELECT
            i AS id,
            'user_' || (hash(i, 1) % 200000) AS user_id,
            round((hash(i, 2) % 1000000) / 100.0, 2) AS amount,
            ['books','games','food','tools','music','garden','toys','shoes','sport','home']
              [(1 + hash(i, 3) % 10)::BIGINT] AS category,
            CASE WHEN hash(i, 4) % 20 = 0 THEN NULL ELSE (hash(i, 5) % 1000) END AS score,
            TIMESTAMP '2026-01-01' + INTERVAL ((hash(i, 6) % 31536000)::BIGINT) SECOND AS ts,
            'note ' || (hash(i, 7) % 100000) || ' of ' || (hash(i, 8) % 977) AS note,
            'u' || (hash(i, 9) % 1000000) || '@mail' || (hash(i, 10) % 50) || '.example.com'
              AS email
          FROM range({rows}) t(i)
        ) TO '{csv}' (HEADER, DELIMITER ',')
        """
    )
    table = pacsv.read_csv(csv)
    pq.write_table(
        table,
        parquet,
        row_group_size=rows,
        compression="snappy",
        write_page_index=True,
    )
    meta = pq.ParquetFile(parquet).metadata
    assert meta.num_row_groups == 1, meta.num_row_groups
    with open(marker, "w") as f:
        f.write(f"{rows}\n")
    for f in (csv, parquet):
        print(f"bench_splits: {f}: {os.path.getsize(f) / 2**20:.0f} MiB", file=sys.stderr)
    return 0


def run_once(cmd: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {code}\n{tail}")
    return wall, usage.ru_maxrss / 1024


DUCKDB = """
import duckdb, sys
con = duckdb.connect(config={"threads": int(sys.argv[2])})
con.execute("SELECT * FROM (SUMMARIZE SELECT * FROM '" + sys.argv[1] + "')").fetchall()
"""


def run(th: str, d: str, runs: int) -> int:
    failed = False
    rows = []
    for name in ("data.csv", "data.parquet"):
        path = os.path.join(d, name)
        for workers in (1, 2):
            cmds = [
                (f"th --workers {workers}", [th, "profile", path, "--workers", str(workers), "--quiet",
                                            "--output", os.path.join(d, f"{name}.{workers}.json")]),
                (f"duckdb SUMMARIZE, {workers} thread{'s' if workers > 1 else ''}",
                 [sys.executable, "-c", DUCKDB, path, str(workers)]),
            ]
            for tool, cmd in cmds:
                try:
                    run_once(cmd)  # warm-up: the page cache
                    walls, rss = [], 0.0
                    for _ in range(runs):
                        w, r = run_once(cmd)
                        walls.append(w)
                        rss = max(rss, r)
                    rows.append((name, tool, workers, statistics.median(walls), min(walls), rss))
                except RuntimeError as e:
                    print(f"bench_splits: {tool} on {name}: {e}", file=sys.stderr)
                    rows.append((name, tool, workers, math.nan, math.nan, math.nan))
                    failed = True
                print(f"bench_splits: {name} {tool}: {rows[-1][3]:.2f} s, {rows[-1][5]:.0f} MiB",
                      file=sys.stderr)
    # The plans th made: tasks per run (the file cut into that many ranges).
    tasks = {}
    for name in ("data.csv", "data.parquet"):
        for workers in (1, 2):
            try:
                with open(os.path.join(d, f"{name}.{workers}.json")) as f:
                    tasks[(name, workers)] = json.load(f)["partitioning"]["tasks_merged"]
            except (OSError, KeyError, ValueError):
                tasks[(name, workers)] = "?"
    med = {(n, t): m for n, t, _, m, _, _ in rows}
    print("| file | tool | tasks | wall s (median) | min s | peak RSS MiB | 1 -> 2 speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, tool, workers, m, lo, rss in rows:
        one = med.get((name, tool.replace(" --workers 2", " --workers 1").replace("2 threads", "1 thread")))
        speed = f"{one / m:.2f}x" if workers == 2 and one and not math.isnan(m) and m > 0 else ""
        t = tasks.get((name, workers), "") if tool.startswith("th") else ""
        fmt = lambda x, s: "n/a" if math.isnan(x) else format(x, s)  # noqa: E731
        print(f"| {name} | {tool} | {t} | {fmt(m, '.2f')} | {fmt(lo, '.2f')} | {fmt(rss, '.0f')} | {speed} |")
    return 1 if failed else 0


def main() -> int:
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "gen":
        return gen(int(a[1]), a[2])
    if len(a) == 4 and a[0] == "run":
        return run(a[1], a[2], int(a[3]))
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

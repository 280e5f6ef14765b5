#!/usr/bin/env python3
"""Time `th profile` the way ../shared/bench/anchors.py times the other tools, so the figures
can be put side by side in one table (scripts/bench.sh does this).

Usage:
  python3 scripts/bench_th.py run TH_BIN DATA_DIR RUNS THREADS OUT_DIR
  python3 scripts/bench_th.py table TITLE ANCHORS.txt TH.txt

run: one warm-up, then RUNS counted runs of each variant, each as its own process
(subprocess + os.wait4: whole-process wall seconds and peak RSS), with POLARS_MAX_THREADS and
TRUTHOUND_NUM_WORKERS set to THREADS; prints `tool median_s min_s max_s peak_rss_mib` rows
like anchors.py. Variants:

  th                th profile DATA_DIR/data.parquet --workers THREADS
  th (no patterns)  the same with --no-patterns
  th parts          th profile DATA_DIR/parts/ --workers THREADS --partitions 8

Each variant's profile (of its last run) stays in OUT_DIR (th.json, th-no-patterns.json,
th-parts.json) for scripts/check_truth.py. A failing variant is reported as `failed` (with the
end of its stderr) and the others still run; the exit status is then 1.

table: read both tables and print one markdown table: tool | wall s (median) | peak RSS MiB |
ratio to floor | ratio to duckdb.
"""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEADER = f"{'tool':<16} {'median_s':>9} {'min_s':>7} {'max_s':>7} {'peak_rss_mib':>13}"


def variants(th: str, data_dir: str, threads: str) -> list[tuple[str, str, list[str]]]:
    common = ["--workers", threads, "--quiet"]
    single = os.path.join(data_dir, "data.parquet")
    parts = os.path.join(data_dir, "parts") + os.sep
    return [
        ("th", "th.json", [th, "profile", single, *common]),
        ("th (no patterns)", "th-no-patterns.json", [th, "profile", single, *common, "--no-patterns"]),
        ("th parts", "th-parts.json", [th, "profile", parts, *common, "--partitions", "8"]),
    ]


def run_once(cmd: list[str], threads: str) -> tuple[float, float]:
    env = dict(os.environ, POLARS_MAX_THREADS=threads, TRUTHOUND_NUM_WORKERS=threads, OMP_NUM_THREADS=threads)
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {p.returncode}\n{tail}")
    return wall, usage.ru_maxrss / 1024


def cmd_run(th: str, data_dir: str, runs: int, threads: str, out_dir: str) -> int:
    os.makedirs(out_dir, exist_ok=True)
    rows, failed = [], False
    for name, out_name, cmd in variants(th, data_dir, threads):
        out = os.path.join(out_dir, out_name)
        if os.path.exists(out):
            os.remove(out)  # never check a stale profile from an earlier run
        cmd = [*cmd, "--output", out]
        try:
            run_once(cmd, threads)  # warm-up (page cache)
            walls, rss = [], 0.0
            for _ in range(runs):
                w, r = run_once(cmd, threads)
                walls.append(w)
                rss = max(rss, r)
            rows.append((name, statistics.median(walls), min(walls), max(walls), rss))
        except RuntimeError as e:
            print(f"bench_th: {name}: {e}", file=sys.stderr)
            rows.append((name, math.nan, math.nan, math.nan, math.nan))
            failed = True
    print(HEADER)
    for name, med, lo, hi, rss in rows:
        if math.isnan(med):
            print(f"{name:<16} {'failed':>9}")
        else:
            print(f"{name:<16} {med:9.3f} {lo:7.3f} {hi:7.3f} {rss:13.0f}")
    return 1 if failed else 0


def parse_table(path: str) -> list[tuple[str, float, float]]:
    """(tool, median_s, peak_rss_mib) from an anchors.py / `run` table; tool names may hold spaces."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] == "tool":
                continue
            if parts[-1] == "failed":
                out.append((" ".join(parts[:-1]), math.nan, math.nan))
                continue
            try:
                med, rss = float(parts[-4]), float(parts[-1])
            except (ValueError, IndexError):
                continue  # not a table row
            out.append((" ".join(parts[:-4]), med, rss))
    return out


def cmd_table(title: str, anchors: str, th: str) -> int:
    rows = parse_table(anchors) + parse_table(th)
    med = {name: m for name, m, _ in rows}
    floor, duck = med.get("floor", math.nan), med.get("duckdb", math.nan)

    def fmt(x: float, spec: str) -> str:
        return "n/a" if math.isnan(x) else format(x, spec)

    def ratio(a: float, b: float) -> str:
        return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"

    print(f"\n### {title}\n")
    print("| tool | wall s (median) | peak RSS MiB | ratio to floor | ratio to duckdb |")
    print("|---|---:|---:|---:|---:|")
    for name, m, rss in rows:
        print(f"| {name} | {fmt(m, '.3f')} | {fmt(rss, '.0f')} | {ratio(m, floor)} | {ratio(m, duck)} |")
    return 0


def main() -> int:
    a = sys.argv[1:]
    if len(a) == 6 and a[0] == "run":
        return cmd_run(a[1], a[2], int(a[3]), a[4], a[5])
    if len(a) == 4 and a[0] == "table":
        return cmd_table(a[1], a[2], a[3])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

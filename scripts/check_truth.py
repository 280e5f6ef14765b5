#!/usr/bin/env python3
"""Check a `th profile` JSON against the exact statistics of the benchmark data set.

Usage: python3 scripts/check_truth.py PROFILE.json TRUTH.json

TRUTH.json is written by ../shared/bench/gen_data.py (exact figures computed with polars). For each
column of the truth, the profile's entry in `columns[]` (matched by `name`) must have:

  all columns   null_count                                   exact
  numeric       distribution.min / .max / .mean, sum         relative 1e-9
                distribution.std (vs std_sample, ddof=1)     relative 1e-9
                nan_count (float columns)                    exact
                quantiles.p1/p25/p50/p75/p99                 within 2% of (max - min): KLL is approximate
  string        empty_string_count (vs empty)                exact
                min_length / max_length                      exact
                avg_length (vs mean_len)                     relative 1e-9
                top_values[:3] (vs top3, as value + count)   exact, see ties below
  boolean       true_count / false_count                     exact

Ties in top3: when several values share a count, which of them comes first is arbitrary, and the
truth lists only 3. So the 3 counts must match in order, and the values whose count is above the
third count must match as a set; a value at the third count is accepted if its count matches.

A field that is absent (or null) in the profile is reported as "missing" and fails.
One line per check; exit status 1 if any check failed, 2 on a usage or input error.
"""
from __future__ import annotations

import json
import math
import sys

REL = 1e-9
QUANTILE_TOL = 0.02  # of the column's (max - min)
PERCENTILES = ("p1", "p25", "p50", "p75", "p99")
MISSING = object()


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def report(self, ok: bool, what: str, detail: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'pass' if ok else 'FAIL'}  {what:<28} {detail}")

    def value(self, what: str, got, want, how: str = "exact", tol: float = 0.0) -> None:
        """how: exact | rel (relative REL) | abs (absolute tol)."""
        if got is MISSING or got is None:
            self.report(False, what, f"missing in profile (truth {want!r})")
            return
        try:
            if how == "exact":
                ok = got == want
                if not ok and isinstance(got, (int, float)) and isinstance(want, (int, float)):
                    ok = float(got) == float(want)
                detail = f"profile {got!r}  truth {want!r}"
            elif how == "rel":
                ok = math.isclose(float(got), float(want), rel_tol=REL, abs_tol=1e-12)
                err = abs(float(got) - float(want)) / max(abs(float(want)), 1e-300)
                detail = f"profile {got!r}  truth {want!r}  rel err {err:.1e}"
            else:
                err = abs(float(got) - float(want))
                ok = err <= tol
                detail = f"profile {got!r}  truth {want!r}  |err| {err:.4g} {'<=' if ok else '>'} tol {tol:.4g}"
        except (TypeError, ValueError):
            ok, detail = False, f"profile {got!r} not comparable with truth {want!r}"
        self.report(ok, what, detail)


def get(obj, *path):
    """obj[path[0]][path[1]]..., MISSING if any step is absent."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


def profile_columns(profile: dict) -> dict[str, dict]:
    cols = profile.get("columns")
    if isinstance(cols, dict):  # tolerate {name: column}
        return {str(k): v for k, v in cols.items()}
    if not isinstance(cols, list):
        raise SystemExit("profile has no columns[] list")
    out = {}
    for c in cols:
        name = c.get("name", c.get("column"))
        if name is not None:
            out[str(name)] = c
    return out


def pair(item):
    """A top_values entry as (value, count): {"value": v, "count": n} or [v, n]."""
    if isinstance(item, dict):
        return item.get("value", MISSING), item.get("count", MISSING)
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return item[0], item[1]
    return MISSING, MISSING


def check_top3(ck: Checker, what: str, got, want: list, accuracy=None) -> None:
    """Exact top values must match the truth (ties may come in any order). Sketched top values
    (accuracy.exact false) must hold every true top value whose count exceeds the sketch's
    max_count_error, each count within that error; fainter values cannot be told from noise and
    may be absent."""
    if got is MISSING or got is None:
        ck.report(False, what, f"missing in profile (truth {want!r})")
        return
    if not isinstance(got, list):
        ck.report(False, what, f"profile top_values is not a list: {got!r}")
        return
    want3 = [(v, c) for v, c in want]
    if isinstance(accuracy, dict) and accuracy.get("exact") is False:
        err = accuracy.get("max_count_error")
        if not isinstance(err, int):
            ck.report(False, what, "approximate top values without max_count_error")
            return
        reported = {v: c for v, c in (pair(x) for x in got)}
        ok = True
        for v, c in want3:
            if c > err:
                ok = ok and v in reported and abs(reported[v] - c) <= err
            elif v in reported:
                ok = ok and abs(reported[v] - c) <= err
        ck.report(ok, what, f"profile {list(reported.items())[:3]!r}  truth {want3!r}  (sketch, ±{err})")
        return
    got3 = [pair(x) for x in got[:3]]
    detail = f"profile {got3!r}  truth {want3!r}"
    if len(got3) < len(want3):
        ck.report(False, what, detail + "  (too few entries)")
        return
    ok = [c for _, c in got3[: len(want3)]] == [c for _, c in want3]
    if ok and want3:
        last = want3[-1][1]
        ok = {v for v, c in got3 if c > last} == {v for v, c in want3 if c > last}
    ck.report(ok, what, detail)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            profile = json.load(f)
        with open(sys.argv[2]) as f:
            truth = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check_truth: {e}", file=sys.stderr)
        return 2
    cols = profile_columns(profile)
    ck = Checker()
    for name, t in truth["columns"].items():
        p = cols.get(name)
        if p is None:
            ck.report(False, f"{name}", "column missing in profile")
            continue
        c = lambda field: f"{name}.{field}"  # noqa: E731
        ck.value(c("null_count"), get(p, "null_count"), t["null_count"])
        if "nan_count" in t:
            ck.value(c("nan_count"), get(p, "nan_count"), t["nan_count"])
        if "mean" in t:  # numeric
            for field in ("min", "max", "mean"):
                ck.value(c(f"distribution.{field}"), get(p, "distribution", field), t[field], "rel")
            ck.value(c("distribution.std"), get(p, "distribution", "std"), t["std_sample"], "rel")
            ck.value(c("sum"), get(p, "sum"), t["sum"], "rel")
            span = float(t["max"]) - float(t["min"])
            tol = QUANTILE_TOL * span if span > 0 else 1e-9
            for q in PERCENTILES:
                if q in t:
                    ck.value(c(f"quantiles.{q}"), get(p, "quantiles", q), t[q], "abs", tol)
        elif "empty" in t:  # string
            ck.value(c("empty_string_count"), get(p, "empty_string_count"), t["empty"])
            ck.value(c("min_length"), get(p, "min_length"), t["min_len"])
            ck.value(c("max_length"), get(p, "max_length"), t["max_len"])
            ck.value(c("avg_length"), get(p, "avg_length"), t["mean_len"], "rel")
            check_top3(ck, c("top_values[:3]"), get(p, "top_values"), t["top3"], (p.get("accuracy") or {}).get("top_values"))
        elif "true" in t:  # boolean
            ck.value(c("true_count"), get(p, "true_count"), t["true"])
            ck.value(c("false_count"), get(p, "false_count"), t["false"])
    print(f"{ck.passed} passed, {ck.failed} failed ({sys.argv[1]} vs {sys.argv[2]})")
    return 1 if ck.failed else 0


if __name__ == "__main__":
    sys.exit(main())

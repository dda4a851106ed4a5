#!/usr/bin/env python3
"""Run the loop-core micro benchmarks for several event loops, alternating between them.

Usage (normally through ``python3 tools/dev.py bench [args]``):
    python bench/run_core.py [--reps N] [--scale F] [--quick] [--loops a,b,c]
                             [--only x,y] [--markdown] [--baseline LOOP] [--json-out FILE]
                             [--no-gc] [--timeout S] [--python EXE]

Every (repetition, benchmark, loop) is one fresh subprocess of bench/core_bench.py. Within a
repetition the loops take turns on each benchmark, and the order of the loops rotates from
one repetition to the next, so slow drifts of a shared machine hit every loop alike. The
table shows the median ops/s per loop and the ratio of each loop's median to the baseline's
(uvloop by default; > 1 means faster than the baseline), plus the geometric mean of those
ratios. A loop that cannot be imported, raises, crashes or hangs is shown as ``fail``; the
reasons are printed under the table and the run goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORE = HERE / "core_bench.py"
DEFAULT_LOOPS = ["asyncio", "uvloop", "ferroloop"]
MACHINE_NOTE = "2 cores, shared, noisy — compare ratios"


def list_benchmarks(python: str) -> list[str]:
    out = subprocess.run(
        [python, str(CORE), "--loop", "asyncio", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_child(python: str, args: list[str], timeout: float) -> dict:
    """Run core_bench.py once; always return a dict (with "error" when anything went wrong)."""
    cmd = [python, str(CORE), *args, "--json"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "fatal": True}
    report = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            break
    if report is not None:
        return report
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = str(-proc.returncode)
        reason = f"crashed: killed by {sig}"
    else:
        reason = f"exited with status {proc.returncode} and no result"
    detail = last_line(proc.stderr) or last_line(proc.stdout)
    if detail:
        reason += f": {detail[:300]}"
    return {"error": reason, "fatal": True}


class Cell:
    """All repetitions of one (benchmark, loop) pair."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.errors: list[str] = []
        self.attempts = 0
        self.gave_up = False

    @property
    def ok(self) -> bool:
        return bool(self.values) and not self.errors

    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> float:
        """Half the min-max range, relative to the median."""
        if len(self.values) < 2:
            return 0.0
        return (max(self.values) - min(self.values)) / 2 / self.median()


def fmt_ops(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def build_table(
    benches: list[str],
    loops: list[str],
    cells: dict[tuple[str, str], Cell],
    baseline: str | None,
    with_spread: bool,
) -> tuple[list[str], list[list[str]]]:
    ratio_loops = []
    if baseline is not None:
        others = [lp for lp in loops if lp != baseline]
        ratio_loops = sorted(others, key=lambda lp: (lp != "ferroloop", others.index(lp)))
    header = ["benchmark", *(f"{lp} ops/s" for lp in loops)]
    header += [f"{lp}/{baseline}" for lp in ratio_loops]
    rows = []
    ratios: dict[str, list[float]] = {lp: [] for lp in ratio_loops}
    for bench in benches:
        row = [bench]
        for lp in loops:
            cell = cells[bench, lp]
            if not cell.ok:
                row.append("fail")
            elif with_spread and len(cell.values) > 1:
                row.append(f"{fmt_ops(cell.median())} ±{cell.spread() * 100:.0f}%")
            else:
                row.append(fmt_ops(cell.median()))
        for lp in ratio_loops:
            mine, base = cells[bench, lp], cells[bench, baseline]
            if mine.ok and base.ok:
                ratio = mine.median() / base.median()
                ratios[lp].append(ratio)
                row.append(fmt_ratio(ratio))
            else:
                row.append("—")
        rows.append(row)
    if ratio_loops:
        geo = ["geomean", *([""] * len(loops))]
        for lp in ratio_loops:
            values = ratios[lp]
            if not values:
                geo.append("—")
                continue
            mean = math.exp(sum(math.log(v) for v in values) / len(values))
            note = "" if len(values) == len(benches) else f" ({len(values)}/{len(benches)})"
            geo.append(fmt_ratio(mean) + note)
        rows.append(geo)
    return header, rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    lines = [line(header), rule]
    for row in rows:
        if row[0] == "geomean":
            lines.append(rule)
        lines.append(line(row))
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows:
        if row[0] == "geomean":
            row = [f"**{c}**" if c else "" for c in row]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reps", type=int, help="repetitions per loop (default 5, quick 3)")
    parser.add_argument("--scale", type=float, help="multiply all counts (default 1, quick 0.2)")
    parser.add_argument("--quick", action="store_true", help="short run: --scale 0.2 --reps 3")
    parser.add_argument("--loops", default=",".join(DEFAULT_LOOPS), help="comma-separated")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--baseline", default="uvloop", help="loop the ratios refer to")
    parser.add_argument(
        "--no-gc", action="store_true", help="disable the cyclic GC during each timed pass"
    )
    parser.add_argument(
        "--pin",
        default="none",
        help="pin every child to one CPU: a CPU number, 'last' or 'none' (default)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json-out", type=Path, help="also write every raw result here")
    parser.add_argument("--timeout", type=float, help="seconds per subprocess (default 60*scale)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the children")
    args = parser.parse_args()

    reps = args.reps if args.reps is not None else (3 if args.quick else 5)
    scale = args.scale if args.scale is not None else (0.2 if args.quick else 1.0)
    if reps < 1 or scale <= 0:
        parser.error("--reps must be >= 1 and --scale > 0")
    timeout = args.timeout or max(60.0, 60.0 * scale)
    loops = [s.strip() for s in args.loops.split(",") if s.strip()]
    if not loops or len(set(loops)) != len(loops):
        parser.error("--loops needs distinct loop names")
    known = list_benchmarks(args.python)
    benches = [s.strip() for s in args.only.split(",") if s.strip()] or known
    unknown = [b for b in benches if b not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    baseline = args.baseline if args.baseline in loops else None
    cpu = None
    if args.pin == "last":
        cpu = max(os.sched_getaffinity(0))
    elif args.pin != "none":
        try:
            cpu = int(args.pin)
        except ValueError:
            parser.error("--pin takes a CPU number, 'last' or 'none'")

    started = time.monotonic()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cells = {(b, lp): Cell() for b in benches for lp in loops}
    loop_notes: dict[str, str] = {}
    child_python = "?"

    # Preflight: import each loop once; a loop that cannot even be created is skipped.
    usable: list[str] = []
    unavailable: dict[str, str] = {}
    builds: dict[str, dict | None] = {}
    for lp in loops:
        report = run_child(args.python, ["--loop", lp, "--check"], timeout)
        if "error" in report:
            for b in benches:
                cells[b, lp].errors.append(report["error"])
            unavailable[lp] = report["error"]
            loop_notes[lp] = f"unavailable: {report['error']}"
        else:
            usable.append(lp)
            loop_notes[lp] = report.get("loop_class", "?")
            builds[lp] = report.get("build")
            version = (builds[lp] or {}).get("version")
            if version:
                loop_notes[lp] += f" {version}"
            child_python = report.get("python", child_python)
        print(f"# {lp}: {loop_notes[lp]}", file=sys.stderr, flush=True)

    for rep in range(reps):
        print(f"# rep {rep + 1}/{reps}:", end="", file=sys.stderr, flush=True)
        for bench in benches:
            print(f" {bench}", end="", file=sys.stderr, flush=True)
            shift = rep % len(usable) if usable else 0
            for lp in usable[shift:] + usable[:shift]:
                cell = cells[bench, lp]
                if cell.gave_up:
                    continue
                cell.attempts += 1
                child_args = ["--loop", lp, "--only", bench, "--scale", repr(scale)]
                if args.no_gc:
                    child_args.append("--no-gc")
                if cpu is not None:
                    child_args += ["--cpu", str(cpu)]
                report = run_child(args.python, child_args, timeout)
                result = report.get("results", {}).get(bench)
                if "error" in report or result is None:
                    cell.errors.append(report.get("error", "no result"))
                    cell.gave_up = bool(report.get("fatal")) and "timed out" in cell.errors[-1]
                elif "error" in result:
                    cell.errors.append(result["error"])
                else:
                    cell.values.append(result["ops_per_sec"])
        print(file=sys.stderr, flush=True)

    # The code under test may have been rebuilt while we ran (shared dev machine).
    changed = []
    for lp in usable:
        report = run_child(args.python, ["--loop", lp, "--check"], timeout)
        if report.get("build") != builds.get(lp):
            changed.append(lp)

    elapsed = time.monotonic() - started
    header, rows = build_table(benches, loops, cells, baseline, with_spread=not args.markdown)
    summary = (
        f"{stamp}; Python {child_python}; {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; reps={reps} scale={scale:g}"
        f"{' gc=off' if args.no_gc else ''}{'' if cpu is None else f' pinned to CPU {cpu}'}; "
        f"median ops/s (higher is better)"
    )
    if baseline and len(loops) > 1:
        summary += f"; ratios = loop median / {baseline} median"
    if args.markdown:
        print(f"{summary}.\n")
        print(render_markdown(header, rows))
    else:
        print(summary)
        print()
        print(render_text(header, rows))
    failures = [(key, cell) for key, cell in cells.items() if cell.errors and key[1] in usable]
    if failures or unavailable:
        print("\nFailures:")
        for lp, reason in unavailable.items():
            print(f"- {lp} (all benchmarks): cannot create the loop: {reason}")
        for (bench, lp), cell in failures:
            distinct = list(dict.fromkeys(cell.errors))
            count = f"{len(cell.errors)}/{cell.attempts}"
            print(f"- {lp} / {bench}: failed {count} run(s): {distinct[0]}")
            for extra in distinct[1:3]:
                print(f"    also: {extra}")
    for lp in changed:
        print(f"\nWARNING: {lp} changed on disk during the run; its numbers mix two builds.")
    print(f"\n(total {elapsed:.0f} s; machine note: {MACHINE_NOTE})")

    if args.json_out:
        raw = {
            "date": stamp,
            "python": child_python,
            "reps": reps,
            "scale": scale,
            "gc": not args.no_gc,
            "cpu": cpu,
            "loops": {lp: loop_notes.get(lp) for lp in loops},
            "builds": builds,
            "changed_during_run": changed,
            "results": {
                f"{b}/{lp}": {"ops_per_sec": c.values, "errors": c.errors}
                for (b, lp), c in cells.items()
            },
        }
        args.json_out.write_text(json.dumps(raw, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

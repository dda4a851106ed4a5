#!/usr/bin/env python3
"""User-space instructions and syscalls per response of a network server, on each loop.

Requests/s and CPU per response on a shared 2-vCPU machine move by 10-30% between runs of
the same build; what a server executes per response does not. For each case and loop this
starts the server under valgrind's callgrind with instrumentation off, drives it with the
load generator for a warm-up, turns instrumentation on for `--seconds` of load, dumps the
counts and divides them by the responses the load generator got back. Instructions are
split the way `perf_split.py` splits perf samples: interpreter (libpython and CPython's
own extension modules), libc, extensions (httptools, aiohttp's parser, ...) and the loop's
own module (ferroloop's `_core`, uvloop's `loop`).

With `--syscalls`, each case also runs once outside valgrind under `strace -c -f` for the
same load: the system calls per response, by name (what the kernel side of the CPU is made
of; strace slows the server, so only the counts mean anything, not the times).

    .venv/bin/python bench/net/instructions_net.py --loops uvloop,ferroloop \\
        --cases starlette,fastapi,aiohttp,aiohttp:102400,websockets,lines [--syscalls]

Cases are framework_apps.py apps (`APP[:SIZE]`, run in the frameworks venv) or
servers.py kinds (`proto`, `bufproto`, `streams`, `sockets`, `http`, `proto+tls`,
`http+tls`), each with an optional `:SIZE` (default 1024).
Needs valgrind (callgrind_control, callgrind_annotate) and, for --syscalls, strace.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import framework_venv
import perf_split
import run_net

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FRAMEWORK_MODES = {
    "starlette": "http",
    "fastapi": "http",
    "aiohttp": "http",
    "websockets": "ws",
    "lines": "echo",
}
SERVER_MODES = {"proto": "echo", "bufproto": "echo", "streams": "echo", "sockets": "echo"}
SERVER_MODES["http"] = "http"
# Under callgrind a server starts 20-50 times slower.
START_TIMEOUT = 300.0


class Case:
    """One server and the load that drives it."""

    def __init__(self, text: str) -> None:
        kind, _, size = text.partition(":")
        kind, self.tls = kind.removesuffix("+tls"), kind.endswith("+tls")
        if kind not in FRAMEWORK_MODES and kind not in SERVER_MODES:
            known = ", ".join([*FRAMEWORK_MODES, *SERVER_MODES])
            raise ValueError(f"unknown case {kind!r} (known: {known})")
        self.kind = kind
        self.size = int(size) if size else 1024
        self.framework = kind in FRAMEWORK_MODES
        self.mode = FRAMEWORK_MODES.get(kind) or SERVER_MODES[kind]
        if self.tls and kind not in ("proto", "http"):
            raise ValueError(f"+tls works with the proto and http kinds, not {kind}")
        self.ca: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}{'+tls' if self.tls else ''} {self.size}B"

    def server_cmd(self, python: str, loop: str) -> list[str]:
        if self.framework:
            script = [str(HERE / "framework_apps.py"), "--app", self.kind]
        else:
            script = [str(HERE / "servers.py"), "--kind", self.kind]
        if self.tls:
            script += ["--tls", "--ca-out", str(self.ca)]
        return [python, *script, "--loop", loop, "--addr", "127.0.0.1:0"]

    def load_cmd(self, args: argparse.Namespace, addr: str, seconds: float) -> list[str]:
        cmd = [str(args.loadgen), "--mode", self.mode, "--addr", addr, "-c", str(args.conns)]
        # A slowed server (valgrind, strace) may leave a connection waiting for seconds:
        # asyncio's sock_recv returns at once when data is there, so a client that is
        # always ahead keeps one task from ever yielding (asyncio's loop does the same).
        cmd += ["-s", str(self.size), "-d", f"{seconds}", "-w", "0", "--stall", "60"]
        if self.kind == "lines":
            cmd += ["--frames", "lines"]
        if self.tls:
            cmd += ["--tls", "--ca", str(self.ca)]
        return cmd


def start(cmd: list[str], env: dict, out: Path) -> tuple[subprocess.Popen, str]:
    """Starts a server; returns it and the address from its `ready` line."""
    with open(out, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = out.read_text()
        match = re.search(r"^ready (\S+)", text, re.M)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {text[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not ready after {START_TIMEOUT:.0f} s")


def load(case: Case, args: argparse.Namespace, addr: str, seconds: float) -> int:
    """Runs the load generator; returns the responses it got back (all checked)."""
    done = subprocess.run(
        case.load_cmd(args, addr, seconds), capture_output=True, text=True, check=False
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result.get("ok") or result.get("errors"):
        raise RuntimeError(f"load generator failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return int(result["requests"])


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def server_env(args: argparse.Namespace) -> dict:
    path = [str(ROOT / "python"), str(HERE), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)), PYTHONHASHSEED="0")


def split_objects(dump: Path, loop: str, stdlib: set[str]) -> dict[str, int]:
    """Instructions in the dump by perf_split's categories (kernel stays empty)."""
    report = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: dict[str, int] = collections.Counter()
    total = 0
    for line in report.splitlines():
        match = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*?)\s*$", line)
        if not match:
            continue
        count = int(match.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in match.group(2):
            total = count
            continue
        obj = re.search(r"\[([^\]]+)\]$", match.group(2))
        # Code inlined from headers carries no object; in these servers that is
        # CPython's own (object.h and friends).
        category = perf_split.categorize(obj.group(1), loop, stdlib) if obj else "interpreter"
        counts[category] += count
    counts["total"] = total
    return counts


def count_instructions(case: Case, loop: str, spec: str, args, python: str, stdlib) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="ferroloop-cg-"))
    try:
        dump = workdir / "callgrind.out"
        case.ca = workdir / "ca.pem"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        cmd += [f"--callgrind-out-file={dump}", *case.server_cmd(python, spec)]
        proc, addr = start(cmd, server_env(args), workdir / "server.log")
        try:
            load(case, args, addr, args.warmup)
            subprocess.run(
                ["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True
            )
            responses = load(case, args, addr, args.seconds)
            subprocess.run(
                ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True
            )
        finally:
            stop(proc)
        dumps = sorted(workdir.glob("callgrind.out*"), key=lambda p: p.stat().st_size)
        # A loop given as NAME=ferroloop...:FACTORY (an older build) has ferroloop's module.
        kind = "ferroloop" if spec.startswith("ferroloop") else loop
        counts = split_objects(dumps[-1], kind, stdlib)
        return {
            "responses": responses,
            "per_response": {k: v / responses for k, v in counts.items()},
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def count_syscalls(case: Case, spec: str, args, python: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="ferroloop-strace-"))
    try:
        case.ca = workdir / "ca.pem"
        proc, addr = start(case.server_cmd(python, spec), server_env(args), workdir / "log")
        try:
            load(case, args, addr, 1.0)
            trace = workdir / "strace.txt"
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-o", str(trace), "-p", str(proc.pid)],
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            responses = load(case, args, addr, args.seconds)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        finally:
            stop(proc)
        calls = {}
        for line in trace.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[-1] != "total" and fields[3].isdigit():
                calls[fields[-1]] = int(fields[3]) / responses
        return calls
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--loops",
        default="uvloop,ferroloop",
        help="comma-separated: asyncio, uvloop, ferroloop or NAME=MODULE:FACTORY",
    )
    ap.add_argument("--cases", default="starlette,fastapi,aiohttp,aiohttp:102400,websockets,lines")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured load per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="uninstrumented load first")
    ap.add_argument("--syscalls", action="store_true", help="also count syscalls (strace)")
    ap.add_argument("--json-out", help="write the results here")
    args = ap.parse_args()
    missing = [
        t
        for t in ("valgrind", "callgrind_control", "callgrind_annotate")
        if shutil.which(t) is None
    ]
    if args.syscalls and shutil.which("strace") is None:
        missing.append("strace")
    if missing:
        ap.error(f"needs {', '.join(missing)} (Debian: apt-get install valgrind strace)")
    cases = [Case(text) for text in args.cases.split(",") if text]
    loops = run_net.parse_loop_specs(args.loops)
    base = ROOT / ".venv" / "bin" / "python"
    base_python = str(base) if base.exists() else sys.executable
    built = argparse.Namespace(no_build=False)
    run_net.build(built, tls=any(case.tls for case in cases))
    args.loadgen = built.loadgen
    bench_python = None
    if any(case.framework for case in cases):
        bench_python = str(framework_venv.ensure(base_python))
    stdlib_of = {
        python: perf_split.stdlib_modules(python)
        for python in {base_python, bench_python}
        if python is not None
    }
    results = []
    for case in cases:
        python = bench_python if case.framework else base_python
        stdlib = stdlib_of[python]
        for name, spec in loops.items():
            row = count_instructions(case, name, spec, args, python, stdlib)
            if args.syscalls:
                row["syscalls"] = count_syscalls(case, spec, args, python)
            row.update(case=case.name, loop=name)
            per = row["per_response"]
            results.append(row)
            calls = row.get("syscalls", {})
            print(
                f"{case.name:20} {name:12} {per['total']:10,.0f} instructions/response"
                f" (interpreter {per.get('interpreter', 0):,.0f}, libc {per.get('libc', 0):,.0f},"
                f" extensions {per.get('extensions', 0):,.0f}, loop {per.get('loop', 0):,.0f});"
                f" {row['responses']} responses"
                + (
                    f"; syscalls/response {sum(calls.values()):.2f} "
                    + " ".join(f"{k}={v:.2f}" for k, v in sorted(calls.items()) if v >= 0.01)
                    if args.syscalls
                    else ""
                ),
                flush=True,
            )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

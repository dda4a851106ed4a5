"""Network benchmarks: asyncio, uvloop, ferroloop and a pure-Rust ceiling, alternately.

    python bench/net/run_net.py [--suite net|udp|tls|spawn|all] [--quick] [--markdown]
        [--reps N] [--duration S] [--filter 'proto 1KiB,http'] [--loops asyncio,uvloop,ferroloop]
        [--json-out FILE]

Builds the load generator (``bench/loadgen``) and the Rust echo server (the
``ferroloop-core`` example) with cargo, starts one server process per loop (``servers.py``)
and drives them one after the other with the same load, rotating the order each
repetition. Servers run pinned to the first CPU and the load generator to the second when
two or more CPUs are available. Every server this script starts runs in its own process
group and is killed on the way out. Only loopback addresses are used.

For every scenario it reports the median requests/s over the repetitions with the ratio to
uvloop, and the server's CPU time per 1000 responses (from /proc/PID/stat, over the
measured window only) with the ratio to the Rust ceiling. See bench/net/README.md.

Suites: ``net`` (TCP echo and HTTP, the default), ``udp`` (datagram echo), ``tls`` (TLS echo
and HTTPS, driven by ``loadgen --tls``, built with the cargo feature ``tls``), ``spawn``
(``spawn_bench.py``, one process per loop and repetition), ``all`` (those four), and
``frameworks`` (uvicorn + starlette, FastAPI, aiohttp.web, websockets, a streams line echo:
``framework_apps.py`` in the venv ``framework_venv.py`` creates).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import math
import os
import platform
import resource
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import framework_venv
import perf_split

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVERS = HERE / "servers.py"
FRAMEWORK_APPS = HERE / "framework_apps.py"
SPAWN_BENCH = HERE / "spawn_bench.py"
RUST = "rust"
ECHO_KINDS = ["proto", "bufproto", "streams", "sockets"]
SIZES = {"64B": 64, "1KiB": 1024, "10KiB": 10 * 1024, "100KiB": 100 * 1024}
SUITES = ["net", "udp", "tls", "spawn"]
# The frameworks suite is not part of `all`: it needs its own venv (framework_venv.py).
FRAMEWORKS = "frameworks"
# framework_apps.py's apps: the name in the table, and how the load generator talks to it.
FRAMEWORK_KINDS = {
    "starlette": ("uvicorn+starlette", "http"),
    "fastapi": ("uvicorn+fastapi", "http"),
    "aiohttp": ("aiohttp.web", "http"),
    "websockets": ("websockets echo", "ws"),
    "lines": ("streams lines", "echo"),
}
SPAWN_TIMEOUT = 300.0
CONCURRENCY = [1, 10, 100]
START_TIMEOUT = 60.0


@dataclass
class Scenario:
    kind: str  # an echo kind, "http", "udp", "proto+tls" or "http+tls"
    size_name: str
    conns: int

    @property
    def size(self) -> int:
        return SIZES[self.size_name]

    @property
    def server_kind(self) -> str:
        return self.kind.removesuffix("+tls")

    @property
    def tls(self) -> bool:
        return self.kind.endswith("+tls")

    @property
    def suite(self) -> str:
        if self.kind in FRAMEWORK_KINDS:
            return FRAMEWORKS
        return "tls" if self.tls else "udp" if self.kind == "udp" else "net"

    @property
    def mode(self) -> str:
        if self.kind in FRAMEWORK_KINDS:
            return FRAMEWORK_KINDS[self.kind][1]
        if self.server_kind in ("http", "udp"):
            return self.server_kind
        return "echo"

    @property
    def name(self) -> str:
        label = FRAMEWORK_KINDS[self.kind][0] if self.kind in FRAMEWORK_KINDS else self.kind
        return f"{label} {self.size_name} c{self.conns}"


def framework_scenarios() -> list[Scenario]:
    """One closed-loop case per app at 10 connections; aiohttp also with 100 KiB bodies."""
    return [
        Scenario("starlette", "1KiB", 10),
        Scenario("fastapi", "1KiB", 10),
        Scenario("aiohttp", "1KiB", 10),
        Scenario("aiohttp", "100KiB", 10),
        Scenario("websockets", "1KiB", 10),
        Scenario("lines", "1KiB", 10),
    ]


def udp_scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("udp", size, conns) for size in ("64B", "1KiB") for conns in (1, 10)]
    return [Scenario("udp", size, conns) for size in ("64B", "1KiB") for conns in CONCURRENCY]


def tls_scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("proto+tls", "1KiB", 10),
            Scenario("proto+tls", "10KiB", 10),
            Scenario("proto+tls", "100KiB", 10),
            Scenario("http+tls", "1KiB", 10),
        ]
    out = [
        Scenario("proto+tls", size, conns)
        for size in ("1KiB", "10KiB", "100KiB")
        for conns in (1, 10)
    ]
    out += [Scenario("http+tls", "1KiB", conns) for conns in CONCURRENCY]
    return out


def all_scenarios(quick: bool, suites: list[str] | None = None) -> list[Scenario]:
    suites = suites or ["net"]
    out: list[Scenario] = []
    if "net" in suites:
        out += net_scenarios(quick)
    if "udp" in suites:
        out += udp_scenarios(quick)
    if "tls" in suites:
        out += tls_scenarios(quick)
    if FRAMEWORKS in suites:
        out += framework_scenarios()
    return out


def net_scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("proto", "1KiB", 1),
            Scenario("proto", "1KiB", 10),
            Scenario("proto", "1KiB", 100),
            Scenario("proto", "100KiB", 10),
            Scenario("bufproto", "1KiB", 10),
            Scenario("streams", "1KiB", 10),
            Scenario("sockets", "1KiB", 10),
            Scenario("http", "1KiB", 10),
            Scenario("http", "1KiB", 100),
        ]
    out = [
        Scenario(kind, size, conns)
        for kind in ECHO_KINDS
        for size in SIZES
        for conns in CONCURRENCY
    ]
    out += [Scenario("http", "1KiB", conns) for conns in CONCURRENCY]
    return out


@dataclass
class Cell:
    runs: list[dict] = field(default_factory=list)
    fail: str | None = None

    def round_medians(self, key: str) -> list[float]:
        """The median of each round's repetitions (--rounds; one round without it)."""
        rounds: dict[int, list[float]] = {}
        for r in self.runs:
            if r.get(key) is not None:
                rounds.setdefault(r.get("round", 0), []).append(r[key])
        return [statistics.median(values) for values in rounds.values()]

    def median(self, key: str) -> float | None:
        """The median over the rounds of each round's median."""
        values = self.round_medians(key)
        return statistics.median(values) if values else None

    def spread(self, key: str = "rps") -> float | None:
        """(max - min) / median: of the round medians with several rounds, else of the runs."""
        values = self.round_medians(key)
        if len(values) < 2:
            values = [r[key] for r in self.runs if r.get(key) is not None]
        if len(values) < 2 or not statistics.median(values):
            return None
        return (max(values) - min(values)) / statistics.median(values)


# -- processes ---------------------------------------------------------------------------

_live: list[subprocess.Popen] = []


def kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Ends a process started with start_new_session=True, and everything in its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the group, if any
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(grace)
    if proc in _live:
        _live.remove(proc)


def kill_all() -> None:
    for proc in list(_live):
        kill_group(proc, grace=1.0)


def pinner(cpu: int | None):
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (the first is field 3, state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float | None:
    fields = proc_stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int) -> int | None:
    """The process's minor page faults so far: each fresh page an allocator maps costs one."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[7])


def busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (for the noise estimate)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# glibc settings for `--malloc steady`: a fixed 4 MiB mmap threshold (no dynamic
# threshold) and a 32 MiB trim threshold, so no buffer a server allocates per request is
# mmapped and unmapped again, whatever the process did before.
STEADY_MALLOC = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=33554432"


class Server:
    """One server process: a Python loop running servers.py, or the Rust echo server."""

    def __init__(self, loop: str, kind: str, args: argparse.Namespace, cpu: int | None):
        self.loop = loop
        self.kind = kind
        self.args = args
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self.addr: str | None = None
        self.error: str | None = None
        self.stderr = tempfile.TemporaryFile(mode="a+b")  # O_APPEND: reads do not move writes
        self.tls = kind.endswith("+tls")
        # With TLS the server writes its CA certificate here; the client trusts only that.
        self.ca = str(args.tmpdir / f"ca-{loop}-{kind}.pem") if self.tls else None

    def command(self) -> list[str]:
        if self.loop == RUST:
            return [str(self.args.echo_server), "--addr", "127.0.0.1:0"]
        spec = self.args.loop_specs[self.loop]
        if self.kind in FRAMEWORK_KINDS:
            cmd = [str(self.args.bench_python), str(FRAMEWORK_APPS), "--app", self.kind]
            return cmd + ["--loop", spec, "--addr", "127.0.0.1:0"]
        kind = self.kind.removesuffix("+tls")
        cmd = [self.args.python, str(SERVERS), "--loop", spec, "--kind", kind]
        cmd += ["--addr", "127.0.0.1:0"]
        if kind == "http" and self.args.httptools:
            cmd += ["--parser", "httptools"]
        if self.tls:
            cmd += ["--tls", "--ca-out", str(self.ca)]
        return cmd

    def start(self) -> bool:
        self.stderr.seek(0)
        self.stderr.truncate()
        env = dict(os.environ)
        if self.args.malloc == "steady":
            env["GLIBC_TUNABLES"] = STEADY_MALLOC
        if self.kind in FRAMEWORK_KINDS:
            # The bench venv has the frameworks; ferroloop comes from the source tree, where
            # `tools/dev.py build` puts the extension. A PYTHONPATH given to the runner is
            # kept after it (for `--loops NAME=MODULE:FACTORY` modules of one's own).
            paths = [str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
            preexec_fn=pinner(self.cpu),
            cwd=ROOT,
            env=env,
        )
        _live.append(self.proc)
        line = self._read_line(START_TIMEOUT)
        if line is not None:
            words = line.split()
            if self.loop == RUST and line.startswith("listening on "):
                self.addr = words[2]
            elif self.loop != RUST and words[:1] == ["ready"]:
                self.addr = words[1]
        if self.addr is None:
            reason = self.stderr_tail() or (line or "").strip()
            if self.proc.poll() is None and not reason:
                reason = f"not ready after {START_TIMEOUT:.0f} s"
            self.error = f"server did not start: {reason or 'exited'}"
            self.stop()
            return False
        self.error = None
        return True

    def _read_line(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        return line.decode(errors="replace") if line else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_mark(self) -> int:
        self.stderr.seek(0, os.SEEK_END)
        return self.stderr.tell()

    def stderr_tail(self, lines: int = 3, since: int = 0) -> str:
        self.stderr.seek(since)
        text = self.stderr.read().decode(errors="replace").strip().splitlines()
        errors = [t for t in text if t.startswith("error:")]
        keep = errors[-1:] if errors else list(dict.fromkeys(t.strip() for t in text))[-lines:]
        return " | ".join(keep)[:300]

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


# -- one measurement ---------------------------------------------------------------------


def client_cpu(sc: Scenario, args: argparse.Namespace) -> int | None:
    """Where the load generator runs: see --placement."""
    if args.placement == "colocate" or (args.placement == "auto" and sc.conns == 1):
        return args.server_cpu
    return args.client_cpu


def run_load(server: Server, sc: Scenario, args: argparse.Namespace) -> dict:
    """Runs the load generator once against a ready server; returns its result."""
    assert server.proc is not None and server.addr is not None
    stall = max(1.0, 0.5 * (args.warmup + args.duration))
    cmd = [
        str(args.loadgen),
        "--mode",
        sc.mode,
        "--addr",
        server.addr,
        "-c",
        str(sc.conns),
        "-s",
        str(sc.size),
        "-d",
        str(args.duration),
        "-w",
        str(args.warmup),
        "--stall",
        str(stall),
        "--server-pid",
        str(server.proc.pid),
    ]
    if sc.tls:
        cmd += ["--tls", "--ca", str(server.ca)]
    if sc.kind == "lines":
        cmd += ["--frames", "lines"]
    # With TLS every connection's handshake comes first, one after the other.
    timeout = args.warmup + args.duration + stall + 30 + (sc.conns * 0.2 if sc.tls else 0)
    busy0, srv0, kids0, t0 = (
        busy_seconds(),
        cpu_seconds(server.proc.pid),
        children_cpu(),
        time.time(),
    )
    faults0 = minor_faults(server.proc.pid)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=pinner(client_cpu(sc, args)),
    )
    _live.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return {"ok": False, "reason": f"load generator timed out after {timeout:.0f} s"}
    except BaseException:
        kill_group(proc, grace=0.5)
        raise
    if proc in _live:
        _live.remove(proc)
    elapsed = time.time() - t0
    srv1 = cpu_seconds(server.proc.pid)
    faults1 = minor_faults(server.proc.pid)
    ours = (children_cpu() - kids0) + ((srv1 or 0) - (srv0 or 0))
    noise = max(0.0, (busy_seconds() - busy0 - ours) / elapsed) if elapsed > 0 else 0.0
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = err.decode(errors="replace").strip()[-300:] or f"exit status {proc.returncode}"
        return {"ok": False, "reason": f"load generator: {reason}"}
    result["noise_cores"] = round(noise, 3)
    if not result.get("ok"):
        samples = result.get("error_samples") or []
        if result.get("fatal"):
            reason = result["fatal"]
        elif samples:
            reason = f"{result.get('errors')} error(s), first: {samples[0]}"
        else:
            reason = "no replies in the measured window (server hung?)"
        result["reason"] = reason
        return result
    if result.get("client_cpu_s") is not None and result.get("duration_s"):
        result["client_busy"] = result["client_cpu_s"] / result["duration_s"]
    result["p99_us"] = (result.get("latency_us") or {}).get("p99")
    if result.get("server_cpu_s") is not None and result["requests"]:
        result["cpu_ms_per_1k"] = result["server_cpu_s"] / result["requests"] * 1e6
    else:
        result["cpu_ms_per_1k"] = None
    # Faults are counted over warm-up and measurement: per response served in both.
    served = result.get("rps", 0) * (args.warmup + args.duration)
    if faults0 is not None and faults1 is not None and served:
        result["faults_per_1k"] = (faults1 - faults0) / served * 1000
    else:
        result["faults_per_1k"] = None
    return result


# -- the run -----------------------------------------------------------------------------


def parse_loop_specs(text: str) -> dict[str, str]:
    """`--loops`: comma-separated names (asyncio, uvloop, ferroloop) or NAME=MODULE:FACTORY;
    returns each loop's name and what servers.py's `--loop` takes for it."""
    specs = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, spec = item.partition("=")
        specs[name] = spec if sep else name
    return specs


def build(args: argparse.Namespace, tls: bool) -> None:
    """Builds loadgen (with the cargo feature ``tls`` when ``tls``) and the Rust echo server."""
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    target = Path(json.loads(meta.stdout)["target_directory"]) / "release"
    args.loadgen = target / "loadgen"
    args.echo_server = target / "examples" / "echo_server"
    if args.no_build:
        return
    loadgen = ["cargo", "build", "--release", "-q", "-p", "ferroloop-loadgen"]
    for cmd in (
        loadgen + (["--features", "tls"] if tls else []),
        ["cargo", "build", "--release", "-q", "-p", "ferroloop-core", "--example", "echo_server"],
    ):
        log(f"$ {shlex.join(cmd)}")
        subprocess.run(cmd, cwd=ROOT, check=True, timeout=900)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(server: Server, sc: Scenario, args: argparse.Namespace) -> dict:
    """One repetition, retried when other processes disturbed it too much."""
    best = None
    for _attempt in range(args.retries + 1):
        result = run_load(server, sc, args)
        if not result.get("ok"):
            return result
        if best is None or result["noise_cores"] < best["noise_cores"]:
            best = result
        if result["noise_cores"] <= args.noise_limit:
            break
    assert best is not None
    return best


def run_kind(
    kind: str,
    scenarios: list[Scenario],
    loops: list[str],
    rust: Server | None,
    args: argparse.Namespace,
    cells: dict[tuple[str, str], Cell],
) -> None:
    servers: dict[str, Server] = {}
    try:
        for loop in loops:
            server = Server(loop, kind, args, args.server_cpu)
            servers[loop] = server
            if not server.start():
                log(f"  {loop} {kind}: {server.error}")
        if rust is not None and kind in ECHO_KINDS:
            servers[RUST] = rust
        columns = [c for c in args.columns if c in servers]
        for sc in scenarios:
            for rep in range(args.reps + (1 if args.perf else 0)):
                if rep == args.reps:
                    for loop in columns:
                        if loop != RUST and cells.get((sc.name, loop), Cell()).fail is None:
                            profile(servers[loop], sc, loop, args)
                    continue
                shift = rep % len(columns)
                for loop in columns[shift:] + columns[:shift]:
                    cell = cells.setdefault((sc.name, loop), Cell())
                    server = servers[loop]
                    if cell.fail is not None:
                        continue
                    if not server.alive() and not server.start():
                        cell.fail = server.error
                        continue
                    mark = server.stderr_mark()
                    result = measure(server, sc, args)
                    result.update(loop=loop, scenario=sc.name, rep=rep, round=args.round)
                    args.raw.append(result)
                    if result.get("ok"):
                        cell.runs.append(result)
                        log(
                            f"  {sc.name:<26} {loop:<10} {result['rps']:>10.0f} req/s"
                            f"  p99 {result['latency_us']['p99']:>8.0f} us"
                            f"  noise {result['noise_cores']:.2f}"
                        )
                        continue
                    reason = result.get("reason", "failed")
                    said = server.stderr_tail(since=mark)
                    if not server.alive():
                        reason += f"; server exited ({said or 'no message'})"
                    elif said:
                        reason += f"; server said: {said}"
                    cell.fail = reason
                    log(f"  {sc.name:<26} {loop:<10} FAIL {reason}")
                    server.stop()  # a fresh server for the next scenario
    finally:
        for loop, server in servers.items():
            if loop != RUST:
                server.stop()


def profile(server: Server, sc: Scenario, loop: str, args: argparse.Namespace) -> None:
    """--perf: one more run of `sc` against `server`, sampled with perf, not counted in the
    tables; keeps where the server's CPU went in args.perf_splits (one per round)."""
    if not server.alive() or server.proc is None:
        return
    data = args.tmpdir / "perf.data"
    seconds = args.warmup + args.duration
    perf = perf_split.record(server.proc.pid, seconds, data, pinner(args.client_cpu))
    _live.append(perf)
    result = run_load(server, sc, args)
    try:
        _, err = perf.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        kill_group(perf)
        return
    if perf in _live:
        _live.remove(perf)
    shares = perf_split.split(data, loop, args.stdlib_modules) if perf.returncode == 0 else None
    if shares is None:
        log(f"  perf {sc.name} {loop}: no samples ({err.decode(errors='replace').strip()[-200:]})")
        return
    shares["cpu_ms_per_1k"] = result.get("cpu_ms_per_1k") if result.get("ok") else None
    args.perf_splits.setdefault((sc.name, loop), []).append(shares)
    log(
        f"  perf {sc.name:<26} {loop:<10} "
        + " ".join(f"{key} {shares[key]:.1f}%" for key in perf_split.CATEGORIES)
    )


def render_perf(args: argparse.Namespace, markdown: bool) -> list[str]:
    """The --perf table: median shares over the rounds, per case and loop."""
    rows = []
    for (name, loop), splits in args.perf_splits.items():
        row = [name, loop]
        for key in perf_split.CATEGORIES:
            row.append(f"{statistics.median(s[key] for s in splits):.1f}%")
        own = [s["loop"] / 100 * s["cpu_ms_per_1k"] for s in splits if s["cpu_ms_per_1k"]]
        row.append(
            f"{statistics.median(own):.1f}" if own and loop in perf_split.LOOP_MODULES else "-"
        )
        row.append(f"{sum(s['samples'] for s in splits):.0f}")
        rows.append(row)
    return format_table(
        "Where the server's CPU went (perf -e cpu-clock, one extra run per case, loop and"
        " round; shares of the server's samples, median over rounds)",
        ["case", "loop", *perf_split.CATEGORIES, "loop µs/response", "samples"],
        rows,
        markdown,
    )


def fmt_rate(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def format_table(title: str, header: list[str], rows: list[list[str]], markdown: bool) -> list:
    lines = [title, ""]
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            lines.append("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells_ = [row[0].ljust(widths[0])]
            cells_ += [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells_))
    lines.append("")
    return lines


SUITE_TITLES = {
    "net": ("Requests/s", "the load generator"),
    "udp": ("UDP echo: datagrams/s", "the load generator"),
    "tls": ("TLS: requests/s", "the load generator"),
}


def render(
    scenarios: list[Scenario],
    cells: dict[tuple[str, str], Cell],
    args: argparse.Namespace,
    markdown: bool,
) -> str:
    ref = args.ref
    lines: list[str] = []
    failures: list[tuple[str, str, str]] = []

    for suite, (unit, client) in SUITE_TITLES.items():
        group = [sc for sc in scenarios if sc.suite == suite]
        if group:
            lines += render_group(group, cells, args, markdown, unit, client, failures)
    group = [sc for sc in scenarios if sc.suite == FRAMEWORKS]
    if group:
        lines += render_frameworks(group, cells, args, markdown, failures)
    if args.perf_splits:
        lines += render_perf(args, markdown)
    spawn_rows = [row for row, _ in SPAWN_ROWS if any(k[0] == row for k in cells)]
    if spawn_rows:
        rows = []
        for row, _ in SPAWN_ROWS:
            if row not in spawn_rows:
                continue
            ref_value = cells.get((row, ref), Cell()).median("value")
            out, spreads = [row], []
            for loop in args.loop_specs:
                cell = cells.get((row, loop))
                if cell is None:
                    out.append("n/a")
                elif cell.fail is not None:
                    out.append("fail")
                    failures.append((loop, row, cell.fail))
                elif (value := cell.median("value")) is None:
                    out.append("-")
                else:
                    if (spread := cell.spread("value")) is not None:
                        spreads.append(spread)
                    ratio = f" ({value / ref_value:.2f})" if ref_value else ""
                    out.append(f"{value:.0f}{ratio}")
            out.append(f"{max(spreads) * 100:.0f}%" if spreads else "")
            rows.append(out)
        lines += format_table(
            f"Subprocesses, median of {args.reps} (ratio to {ref}); higher is better",
            ["benchmark", *args.loop_specs, "spread"],
            rows,
            markdown,
        )
    if failures:
        lines.append("Failures:")
        lines.append("")
        grouped: dict[tuple[str, str], list[str]] = {}
        for loop, name, reason in failures:
            grouped.setdefault((loop, reason), []).append(name)
        for (loop, reason), names in grouped.items():
            lines.append(f"- {loop} in {', '.join(names)}: {reason}")
        lines.append("")
    noise = [r["noise_cores"] for r in args.raw if "noise_cores" in r]
    if noise:
        lines.append(
            f"Other processes' CPU use during kept runs: median {statistics.median(noise):.2f}"
            f" cores, max {max(noise):.2f}."
        )
    return "\n".join(lines)


def render_group(
    scenarios: list[Scenario],
    cells: dict[tuple[str, str], Cell],
    args: argparse.Namespace,
    markdown: bool,
    unit: str,
    client: str,
    failures: list[tuple[str, str, str]],
) -> list[str]:
    """The rate and CPU tables of one suite's scenarios."""
    ref = args.ref
    has_rust = any(sc.kind in ECHO_KINDS for sc in scenarios)
    columns = [c for c in args.columns if c != RUST or has_rust]
    lines: list[str] = []
    rps_rows, cpu_rows, fault_rows = [], [], []
    for sc in scenarios:
        rps_row, cpu_row, fault_row = [sc.name], [sc.name], [sc.name]
        ref_rps = cells.get((sc.name, ref), Cell()).median("rps")
        rust_cpu = cells.get((sc.name, RUST), Cell()).median("cpu_ms_per_1k")
        spreads = []
        for loop in columns:
            cell = cells.get((sc.name, loop))
            if cell is None or (loop == RUST and sc.kind not in ECHO_KINDS):
                for row in (rps_row, cpu_row, fault_row):
                    row.append("n/a")
                continue
            if cell.fail is not None:
                for row in (rps_row, cpu_row, fault_row):
                    row.append("fail")
                failures.append((loop, sc.name, cell.fail))
                continue
            rps = cell.median("rps")
            cpu = cell.median("cpu_ms_per_1k")
            if rps is None:
                for row in (rps_row, cpu_row, fault_row):
                    row.append("-")
                continue
            faults = cell.median("faults_per_1k")
            fault_row.append("-" if faults is None else f"{faults:.0f}")
            spread = cell.spread()
            if spread is not None:
                spreads.append(spread)
            ratio = f" ({rps / ref_rps:.2f})" if ref_rps else ""
            busy = cell.median("client_busy")
            mark = "!" if busy is not None and busy >= 0.9 else ""
            rps_row.append(fmt_rate(rps) + ratio + mark)
            if cpu is None:
                cpu_row.append("-")
            else:
                ratio = f" ({cpu / rust_cpu:.1f}x)" if rust_cpu else ""
                cpu_row.append(f"{cpu:.1f}{ratio}")
        rps_row.append(f"{max(spreads) * 100:.0f}%" if spreads else "")
        rps_rows.append(rps_row)
        cpu_rows.append(cpu_row)
        fault_rows.append(fault_row)

    lines += format_table(
        f"{unit}, median of {args.reps} (ratio to {ref});"
        " spread = (max-min)/median of the worst loop",
        ["scenario", *columns, "spread"],
        rps_rows,
        markdown,
    )
    lines.append(
        f"! = {client} used 90% or more of its CPU: the client may be the limit, so"
        " the server can do at least this much."
    )
    lines.append("")
    ceiling = " (ratio to the Rust ceiling)" if has_rust else ""
    lines += format_table(
        f"Server CPU ms per 1000 responses, median{ceiling}; lower is better",
        ["scenario", *columns],
        cpu_rows,
        markdown,
    )
    lines.append("")
    lines += format_table(
        "Server minor page faults per 1000 responses, median: memory the allocator maps"
        " and unmaps again (glibc's mmap threshold), a cost the CPU column includes",
        ["scenario", *columns],
        fault_rows,
        markdown,
    )
    return lines


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def render_frameworks(
    scenarios: list[Scenario],
    cells: dict[tuple[str, str], Cell],
    args: argparse.Namespace,
    markdown: bool,
    failures: list[tuple[str, str, str]],
) -> list[str]:
    """Requests/s, p99 latency and server CPU per response of the real-framework cases,
    each with its ratio to the reference loop and, for requests/s and CPU, a geomean row."""
    ref, loops = args.ref, list(args.loop_specs)
    # key: (how its value is shown, how its ratio to the reference loop is shown)
    metrics = {
        "rps": (fmt_rate, "({:.2f})"),
        "p99_us": (lambda v: f"{v:.0f}", "({:.2f}x)"),
        "cpu_ms_per_1k": (lambda v: f"{v:.1f}", "({:.2f}x)"),
    }
    tables: dict[str, list[list[str]]] = {key: [] for key in metrics}
    ratios: dict[str, dict[str, list[float]]] = {k: {loop: [] for loop in loops} for k in metrics}
    for sc in scenarios:
        rows = {key: [sc.name] for key in metrics}
        spreads = []
        for loop in loops:
            cell = cells.get((sc.name, loop))
            if cell is None or cell.fail is not None or cell.median("rps") is None:
                text = "n/a" if cell is None else "-" if cell.fail is None else "fail"
                if cell is not None and cell.fail is not None:
                    failures.append((loop, sc.name, cell.fail))
                for row in rows.values():
                    row.append(text)
                continue
            if (spread := cell.spread()) is not None:
                spreads.append(spread)
            busy = cell.median("client_busy")
            for key, (fmt, ratio_fmt) in metrics.items():
                value = cell.median(key)
                ref_value = cells.get((sc.name, ref), Cell()).median(key)
                if value is None:
                    rows[key].append("-")
                    continue
                text = fmt(value)
                if ref_value:
                    ratios[key][loop].append(value / ref_value)
                    text += " " + ratio_fmt.format(value / ref_value)
                if key == "rps" and busy is not None and busy >= 0.9:
                    text += "!"
                rows[key].append(text)
        rows["rps"].append(f"{max(spreads) * 100:.0f}%" if spreads else "")
        for key, row in rows.items():
            tables[key].append(row)
    for key in ("rps", "cpu_ms_per_1k"):
        row = ["geomean"]
        for loop in loops:
            mean = geomean(ratios[key][loop]) if len(ratios[key][loop]) == len(scenarios) else None
            row.append("-" if mean is None else metrics[key][1].format(mean))
        tables[key].append(row + ([""] if key == "rps" else []))
    what = f"median of {args.reps} reps" + (
        f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    )
    spread = "across rounds" if args.rounds > 1 else "across reps"
    lines = format_table(
        f"Real frameworks: requests/s, {what} (ratio to {ref}); spread = (max-min)/median"
        f" {spread}, of the worst loop",
        ["case", *loops, "spread"],
        tables["rps"],
        markdown,
    )
    lines.append("! = the load generator used 90% or more of its CPU: the client may be the limit.")
    lines.append("")
    lines += format_table(
        f"Real frameworks: p99 latency in µs, median (ratio to {ref}); lower is better",
        ["case", *loops],
        tables["p99_us"],
        markdown,
    )
    lines += format_table(
        f"Real frameworks: server CPU µs per response, median (ratio to {ref}); lower is better",
        ["case", *loops],
        tables["cpu_ms_per_1k"],
        markdown,
    )
    return lines


# -- the spawn suite ---------------------------------------------------------------------

# (row name, what it reports): the rows of the subprocess table.
SPAWN_ROWS = [
    ("spawn true (spawns/s)", "spawns_per_s"),
    ("cat 4MiB pipe (MiB/s)", "cat_mib_s"),
]


def run_spawn(args: argparse.Namespace, cells: dict[tuple[str, str], Cell]) -> None:
    """Runs spawn_bench.py once per loop and repetition, rotating the order."""
    loops = list(args.loop_specs)
    for rep in range(args.reps):
        shift = rep % len(loops)
        for loop in loops[shift:] + loops[:shift]:
            if any(cells.get((row, loop), Cell()).fail for row, _ in SPAWN_ROWS):
                continue
            result = run_spawn_once(loop, args)
            result.update(loop=loop, scenario="spawn", rep=rep)
            args.raw.append(result)
            for row, key in SPAWN_ROWS:
                cell = cells.setdefault((row, loop), Cell())
                if result.get("ok"):
                    cell.runs.append({"value": result[key], "noise_cores": result["noise_cores"]})
                else:
                    cell.fail = result.get("reason") or result.get("error") or "failed"
            if result.get("ok"):
                log(
                    f"  spawn {loop:<10} {result['spawns_per_s']:>7.0f} spawns/s"
                    f" {result['cat_mib_s']:>7.0f} MiB/s through cat"
                    f"  noise {result['noise_cores']:.2f}"
                )
            else:
                log(f"  spawn {loop:<10} FAIL {cells[(SPAWN_ROWS[0][0], loop)].fail}")


def run_spawn_once(loop: str, args: argparse.Namespace) -> dict:
    cmd = [args.python, str(SPAWN_BENCH), "--loop", args.loop_specs[loop]]
    cmd += ["--spawns", str(args.spawns), "--pipes", str(args.pipes)]
    cmd += ["--timeout", str(SPAWN_TIMEOUT)]
    busy0, kids0, t0 = busy_seconds(), children_cpu(), time.time()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=pinner(args.server_cpu),
        cwd=ROOT,
    )
    _live.append(proc)
    try:
        out, err = proc.communicate(timeout=SPAWN_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return {"ok": False, "reason": f"spawn_bench timed out after {SPAWN_TIMEOUT + 30:.0f} s"}
    except BaseException:
        kill_group(proc, grace=0.5)
        raise
    kill_group(proc, grace=0.5)  # and anything it left behind in its group
    elapsed = time.time() - t0
    ours = children_cpu() - kids0
    noise = max(0.0, (busy_seconds() - busy0 - ours) / elapsed) if elapsed > 0 else 0.0
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = err.decode(errors="replace").strip()[-300:] or f"exit status {proc.returncode}"
        return {"ok": False, "reason": f"spawn_bench: {reason}"}
    result["noise_cores"] = round(noise, 3)
    if not result.get("ok"):
        result["reason"] = result.get("error") or f"exit status {proc.returncode}"
    return result


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--loops",
        default="asyncio,uvloop,ferroloop",
        help="comma-separated: asyncio, uvloop, ferroloop or NAME=MODULE:FACTORY",
    )
    p.add_argument("--ref", default="uvloop", help="loop the req/s ratios refer to")
    p.add_argument("--no-rust", action="store_true", help="skip the Rust ceiling server")
    p.add_argument(
        "--suite",
        default="net",
        help="comma-separated: net (TCP echo, HTTP; the default), udp, tls, spawn, or all",
    )
    p.add_argument("--quick", action="store_true", help="a subset of scenarios, 3 reps, 1 s")
    p.add_argument("--spawns", type=int, default=300, help="spawn suite: `true` runs per rep")
    p.add_argument("--pipes", type=int, default=30, help="spawn suite: 4 MiB `cat` runs per rep")
    p.add_argument("--reps", type=int, help="repetitions per scenario and loop (5; quick 3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the selected scenarios N times over, servers restarted each time; tables"
        " give the median of the rounds' medians, spreads across the rounds",
    )
    p.add_argument("--duration", type=float, help="measured seconds per run (2; quick 1)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (0.5; quick 0.3)")
    p.add_argument("--filter", default="", help="only scenarios whose name contains A or B: 'A,B'")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--json-out", type=Path, help="write every run's raw result here")
    p.add_argument("--python", help="interpreter for the servers (default: .venv, else this one)")
    p.add_argument("--httptools", action="store_true", help="HTTP server parses with httptools")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    p.add_argument(
        "--placement",
        choices=["auto", "split", "colocate"],
        default="auto",
        help="split: server on the 1st CPU, load generator on the 2nd; colocate: both on the"
        " 1st; auto (default): split, except c1 scenarios, which colocate",
    )
    p.add_argument("--no-build", action="store_true", help="use the already built binaries")
    p.add_argument(
        "--perf",
        action="store_true",
        help="after each case's repetitions, one more run per loop sampled with perf: where"
        " the server's CPU goes (kernel, libc, interpreter, extensions, the loop's own module)",
    )
    p.add_argument(
        "--malloc",
        choices=["default", "steady"],
        default="default",
        help="default: glibc as shipped (its mmap threshold moves with what the process did"
        " before, so a loop may pay an mmap/munmap per large read in one process and not in"
        " the next); steady: every server with a fixed high threshold (GLIBC_TUNABLES)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-run a measurement disturbed by other processes up to N times",
    )
    p.add_argument(
        "--noise-limit",
        type=float,
        default=0.3,
        help="other processes' CPU use (in cores) above which a run is retried",
    )
    args = p.parse_args()
    suites = [w.strip() for w in args.suite.split(",") if w.strip()]
    args.suites = [*SUITES, *(w for w in suites if w == FRAMEWORKS)] if "all" in suites else suites
    if not args.suites or any(w not in [*SUITES, FRAMEWORKS] for w in args.suites):
        p.error(f"--suite: comma-separated {', '.join(SUITES)}, {FRAMEWORKS} or all")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.round = 0
    args.rounds_text = f"{args.rounds} rounds of " if args.rounds > 1 else ""
    if args.spawns < 1 or args.pipes < 1:
        p.error("--spawns and --pipes must be at least 1")
    args.reps = args.reps or (3 if args.quick else 5)
    args.duration = args.duration or (1.0 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    if args.reps < 1 or args.duration <= 0 or args.duration > 600 or args.warmup < 0:
        p.error("--reps must be >= 1 and --duration in (0, 600]")
    venv = ROOT / ".venv" / "bin" / "python"
    args.python = args.python or (str(venv) if venv.exists() else sys.executable)
    args.bench_python = None
    if FRAMEWORKS in args.suites:
        args.bench_python = framework_venv.ensure(args.python)
    args.perf_splits = {}
    if args.perf:
        if (why := perf_split.available()) is not None:
            p.error(f"--perf: {why}")
        args.stdlib_modules = perf_split.stdlib_modules(str(args.bench_python or args.python))
    args.loop_specs = parse_loop_specs(args.loops)
    args.columns = ([] if args.no_rust else [RUST]) + list(args.loop_specs)
    if args.ref not in args.loop_specs:
        args.ref = next(iter(args.loop_specs), RUST)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and not args.no_pin:
        args.server_cpu, args.client_cpu = cpus[0], cpus[1]
    else:
        args.server_cpu = args.client_cpu = None
    args.raw = []
    args.tmpdir = Path(tempfile.mkdtemp(prefix="ferroloop-net-"))
    atexit.register(shutil.rmtree, args.tmpdir, ignore_errors=True)
    return args


def main() -> int:
    args = parse_args()
    atexit.register(kill_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    scenarios = all_scenarios(args.quick, args.suites)
    spawn = "spawn" in args.suites
    if args.filter:
        wanted = [w.strip() for w in args.filter.split(",") if w.strip()]
        scenarios = [s for s in scenarios if any(w in s.name for w in wanted)]
        spawn = spawn and any(w in "spawn" for w in wanted)
    if not scenarios and not spawn:
        log("no scenario matches --filter")
        return 1
    build(args, tls=any(s.tls for s in scenarios))
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    started = datetime.datetime.now(datetime.UTC)
    with_rust = any(s.kind in ECHO_KINDS for s in scenarios)
    servers = [c for c in args.columns if c != RUST or with_rust]
    log(
        f"suites {','.join(args.suites)}:"
        f" {len(scenarios)} scenarios x {len(servers)} servers x {args.reps} reps,"
        f" {args.warmup}+{args.duration} s each; server CPU {args.server_cpu},"
        f" client CPU {args.client_cpu} (placement {args.placement}); malloc {args.malloc};"
        f" Python {version}"
    )
    cells: dict[tuple[str, str], Cell] = {}
    rust = None
    interrupted = False
    try:
        if not args.no_rust and any(s.kind in ECHO_KINDS for s in scenarios):
            rust = Server(RUST, "echo", args, args.server_cpu)
            if not rust.start():
                log(f"  rust: {rust.error}")
        kinds = list(dict.fromkeys(s.kind for s in scenarios))
        for round_index in range(args.rounds):
            args.round = round_index
            if args.rounds > 1:
                log(f"=== round {args.round + 1} of {args.rounds}")
            for kind in kinds:
                log(f"== {kind}")
                run_kind(
                    kind,
                    [s for s in scenarios if s.kind == kind],
                    list(args.loop_specs),
                    rust,
                    args,
                    cells,
                )
        if spawn:
            log(f"== spawn ({args.spawns} x true, {args.pipes} x 4 MiB through cat)")
            run_spawn(args, cells)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what was measured")
    finally:
        if rust is not None:
            rust.stop()
        kill_all()

    took = datetime.datetime.now(datetime.UTC) - started
    log(f"took {took.total_seconds() / 60:.1f} min")
    header = f"{started:%Y-%m-%d %H:%M} UTC, Python {version}, {platform.machine()}"
    header += f", {os.cpu_count()} CPUs"
    if scenarios:
        header += (
            f" (server on CPU {args.server_cpu}, load generator on CPU {args.client_cpu},"
            f" placement {args.placement}); {args.rounds_text}{args.reps} reps x {args.duration} s"
            f" (+{args.warmup} s warm-up); malloc {args.malloc}"
        )
    if spawn:
        header += (
            f"; spawn: {args.reps} reps of {args.spawns} x true and {args.pipes} x 4 MiB"
            f" through cat, pinned to CPU {args.server_cpu}"
        )
    print(header)
    print()
    print(render(scenarios, cells, args, args.markdown))
    if args.json_out:
        payload = {
            "started": started.isoformat(),
            "python": version,
            "cpus": os.cpu_count(),
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "loops": args.loop_specs,
            "reps": args.reps,
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "malloc": args.malloc,
            "runs": args.raw,
            "perf": [
                {"scenario": name, "loop": loop, "splits": splits}
                for (name, loop), splits in args.perf_splits.items()
            ],
            "failures": {f"{loop} / {name}": c.fail for (name, loop), c in cells.items() if c.fail},
        }
        args.json_out.write_text(json.dumps(payload, indent=1) + "\n")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a server's CPU goes, from `perf record -e cpu-clock` samples split by shared object.

Used by run_net.py `--perf`: `record` samples one process while the load generator runs,
`split` reads the samples back (`perf report --sort dso`) and adds them up into:

* kernel: `[kernel.kallsyms]` (the TCP stack, epoll, syscalls, scheduling);
* libc: libc, libm, the dynamic loader and `[vdso]`;
* interpreter: libpython / the python binary and CPython's own extension modules
  (lib-dynload: `_asyncio` with the C Task, `_socket`, `select`, ...): the apps' and the
  frameworks' Python code, and on asyncio's loop the loop itself, which is Python;
* extensions: every other extension module (httptools, aiohttp's parser, multidict,
  yarl, pydantic-core, websockets' speedups, ...);
* loop: the loop's own compiled module: ferroloop's `_core`, uvloop's `loop`. asyncio's
  loop has none (its share is inside "interpreter", which samples cannot split).

Needs `perf` (Debian: `apt-get install linux-perf`) and the right to sample the process
(root, or kernel.perf_event_paranoid <= 1 for one's own processes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

CATEGORIES = ("kernel", "libc", "interpreter", "extensions", "loop")
# The compiled module that is each loop's own code, by the loop's name in run_net.py.
LOOP_MODULES = {"ferroloop": re.compile(r"^_core\."), "uvloop": re.compile(r"^loop\.")}
LIBC = re.compile(r"^(libc|libm|libpthread|ld-linux|ld-)[.-]|^\[vdso\]$")
INTERPRETER = re.compile(r"^(libpython|python)[0-9.]")
SAMPLE_RATE = 997  # Hz: not a multiple of the timer tick, so sampling does not alias.


def available() -> str | None:
    """None when perf can be used, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: apt-get install linux-perf)"
    return None


def stdlib_modules(python: str) -> set[str]:
    """The file names of `python`'s own extension modules (its lib-dynload)."""
    # A venv's platstdlib is the venv: ask a stdlib extension module where it lives (some
    # builds link some of them into the interpreter; those have no file).
    code = (
        "import importlib, os\n"
        "for name in ('_asyncio', '_socket', 'select', '_json', 'math'):\n"
        "    path = getattr(importlib.import_module(name), '__file__', None)\n"
        "    if path:\n"
        "        print('\\n'.join(os.listdir(os.path.dirname(path))))\n"
        "        break\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return set(out.stdout.split())


def record(pid: int, seconds: float, output: Path, preexec_fn=None) -> subprocess.Popen:
    """Starts sampling process `pid` for `seconds` into `output`; wait for the result."""
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLE_RATE)]
    cmd += ["-p", str(pid), "-o", str(output), "--", "sleep", f"{seconds:.2f}"]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )


def categorize(dso: str, loop: str, stdlib: set[str]) -> str:
    name = os.path.basename(dso)
    if dso.startswith("[kernel"):
        return "kernel"
    if LIBC.search(name):
        return "libc"
    pattern = LOOP_MODULES.get(loop)
    if pattern is not None and pattern.search(name) and ".so" in name:
        return "loop"
    if INTERPRETER.search(name) or name in stdlib:
        return "interpreter"
    return "extensions"


def split(data: Path, loop: str, stdlib: set[str]) -> dict[str, float] | None:
    """Percent of the samples in each category, plus `samples`; None without samples."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "-q", "-n", "--sort", "dso"]
        + ["--no-children"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    counts = dict.fromkeys(CATEGORIES, 0)
    for line in report.stdout.splitlines():
        match = re.match(r"\s*[0-9.]+%\s+([0-9]+)\s+(\S.*?)\s*$", line)
        if match:
            counts[categorize(match.group(2), loop, stdlib)] += int(match.group(1))
    total = sum(counts.values())
    if not total:
        return None
    shares = {key: 100.0 * count / total for key, count in counts.items()}
    shares["samples"] = float(total)
    return shares

#!/usr/bin/env python3
"""Build, demo, test and benchmark ferroloop from a fresh clone.

Usage: python3 tools/dev.py {build,demo,test,lint,conformance,compat,upstream,bench,versions,
                             pythons,wheels,fuzz}

Everything is installed into ./.venv (created on first use) with the interpreter that
runs this script, or with the one named by $FERROLOOP_PYTHON. Needs only Python 3.11+
with pip and a stable Rust toolchain; `test` and `versions` also use CPython 3.14 and
3.15, which `pythons` (tools/pythons.py) installs from Debian's packages into
/opt/ferroloop-pythons on first use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pythons
import wheels

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# Tools the build and the tests need; pinned so a fresh clone builds the same way.
DEV_REQUIREMENTS = [
    "hypothesis==6.170.29",
    "maturin>=1.9,<2",
    "pytest>=8,<10",
    "ruff==0.14.*",
    "trustme>=1,<2",
]
BENCH_REQUIREMENTS = ["uvloop", "matplotlib", "trustme>=1,<2"]
# Libraries compat/ runs unchanged on ferroloop, in their own venv (their pytest plugins and
# dependencies stay out of .venv); pinned so that a new release cannot change a CI run.
COMPAT_VENV = ROOT / ".venv-compat"
COMPAT_REQUIREMENTS = [
    "aiohttp==3.14.5",
    "anyio==4.16.0",
    # fastapi and httptools: for test_framework_bench.py (the frameworks benchmark's apps).
    "fastapi==0.163.2",
    "httptools==0.9.0",
    "httpx==0.28.1",
    "pytest>=8,<10",
    "pytest-asyncio==1.5.0",
    "starlette==1.10.0",
    "trustme>=1,<2",
    "uvicorn==0.54.0",
    "websockets==17.4",
]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def run(cmd: list[str | os.PathLike], **kwargs) -> None:
    """Run a command from the repo root; stop the whole script if it fails."""
    printable = " ".join(str(c) for c in cmd)
    print(f"+ {printable}", flush=True)
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(kwargs.pop("env", {}))
    cwd = kwargs.pop("cwd", ROOT)
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, **kwargs)
    if result.returncode != 0:
        sys.exit(f"command failed with exit status {result.returncode}: {printable}")


def ensure_venv(extra: list[str] | None = None) -> None:
    """Create .venv and install the development tools into it (idempotent)."""
    python = os.environ.get("FERROLOOP_PYTHON", sys.executable)
    if not venv_python().exists():
        run([python, "-m", "venv", VENV])
    # The stamp lists every requirement installed so far; a later call with fewer extras
    # (build after bench) must not reinstall.
    stamp = VENV / ".dev-requirements"
    wanted = set(DEV_REQUIREMENTS + (extra or []))
    installed = set(stamp.read_text().splitlines()) if stamp.exists() else set()
    if not wanted <= installed:
        run([venv_python(), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run([venv_python(), "-m", "pip", "install", "--quiet", *sorted(wanted)])
        stamp.write_text("\n".join(sorted(wanted | installed)))


def build() -> None:
    """Compile the extension in release mode and install the package into .venv."""
    ensure_venv()
    run([VENV / "bin" / "maturin", "develop", "--release", "--quiet"])


def demo() -> None:
    build()
    run([venv_python(), ROOT / "examples" / "demo.py"])


# The Python trees ruff checks.
LINTED = ["python", "tests", "compat", "bench", "tools", "examples"]


def lint() -> None:
    ensure_venv()
    run(["cargo", "fmt", "--all", "--check"])
    run(["cargo", "clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
    run([VENV / "bin" / "ruff", "check", *LINTED])
    run(
        [
            VENV / "bin" / "ruff",
            "format",
            "--check",
            *LINTED,
        ]
    )


def conformance() -> None:
    run([venv_python(), ROOT / "tests" / "conformance" / "run_asyncio_suite.py"])


def compat() -> None:
    """aiohttp, uvicorn/starlette, websockets, anyio and httpx, unchanged, on both loops
    (compat/), with ferroloop as built into the source tree by `build`. `compat 3.14` runs
    them on another supported Python instead, in .venv-compat-3.14, with ferroloop's wheel
    for it (built as `versions` builds it)."""
    minor = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "compat" else None
    venv = COMPAT_VENV if minor is None else ROOT / f".venv-compat-{minor}"
    python = venv / "bin" / "python"
    if not python.exists():
        base = find_python(minor) if minor else os.environ.get("FERROLOOP_PYTHON", sys.executable)
        run([base, "-m", "venv", venv])
    stamp = venv / ".requirements"
    if not stamp.exists() or stamp.read_text().splitlines() != COMPAT_REQUIREMENTS:
        run([python, "-m", "pip", "install", "--quiet", *COMPAT_REQUIREMENTS])
        stamp.write_text("\n".join(COMPAT_REQUIREMENTS))
    env = {"PYTHONPATH": str(ROOT / "python")}
    if minor is not None:
        version_venv(minor)
        wheels = ROOT / ".venv-versions" / f"wheels-{minor}"
        pip = [python, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps"]
        run([*pip, *wheels.glob("*.whl")])
        env = {}
    # pytest-asyncio is for test_wiring.py's own pytest runs; the suite itself does not use it.
    tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"]
    run([*tests, ROOT / "compat", "--rootdir", ROOT / "compat"], env=env)


def upstream(args: list[str] | None = None) -> None:
    """anyio's, aiohttp's and uvicorn's own test suites (from their sdists), on ferroloop
    and on asyncio's loop (compat/upstream/run.py; arguments such as `--suite aiohttp`
    and `--loop ferroloop` are passed on), with ferroloop as built into the source tree
    by `build`."""
    run([sys.executable, ROOT / "compat" / "upstream" / "run.py", *(args or sys.argv[2:])])


def test() -> None:
    started = time.monotonic()
    build()
    lint()
    run(["cargo", "test", "-p", "ferroloop-core", "-p", "ferroloop-loadgen"])
    conformance()
    run([venv_python(), "-m", "pytest", "-q", "tests"])
    compat()
    # anyio's and uvicorn's own suites whole, aiohttp's in part, on ferroloop; the rest
    # (aiohttp whole, everything on asyncio's loop too) is `tools/dev.py upstream`.
    upstream(["--ci"])
    for minor in CI_EXTRA_VERSIONS:
        test_version(minor)
    print(f"all checks passed in {time.monotonic() - started:.0f} s")


def bench() -> None:
    """The core micro benchmarks (bench/run_core.py); with `--suite S` the network runner
    instead (bench/net/run_net.py, e.g. `bench --suite frameworks --rounds 3 --markdown`,
    which creates the frameworks' venv .venv-bench on first use)."""
    ensure_venv(BENCH_REQUIREMENTS)
    build()
    extra = sys.argv[2:]
    if any(arg == "--suite" or arg.startswith("--suite=") for arg in extra):
        run([venv_python(), ROOT / "bench" / "net" / "run_net.py", *extra])
    else:
        run([venv_python(), ROOT / "bench" / "run_core.py", *extra])


# Every supported minor version; 3.11 is the main one (CI runs everything on it).
SUPPORTED = ("3.11", "3.12", "3.13", "3.14", "3.15")
# The versions CI also runs conformance and pytest on.
CI_EXTRA_VERSIONS = ("3.14", "3.15")


def find_python(minor: str) -> Path:
    """The interpreter of one supported minor version: pyenv's, or for the versions
    Debian 12 lacks, the one tools/pythons.py installs from Debian's packages."""
    if minor in pythons.SID_VERSIONS:
        return pythons.ensure((minor,))[minor]
    for candidate in sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python{minor}")):
        return candidate
    sys.exit(f"no Python {minor} found under ~/.pyenv")


def install_pythons() -> None:
    """Install CPython 3.14 and 3.15 (idempotent; quick when already done)."""
    for minor, path in pythons.ensure().items():
        print(minor, path)


def version_venv(minor: str) -> Path:
    """A venv of one Python version with ferroloop's wheel and the test tools installed
    (under .venv-versions, with its own cargo target dir)."""
    base = ROOT / ".venv-versions"
    venv = base / minor
    vpython = venv / "bin" / "python"
    if not vpython.exists():
        run([find_python(minor), "-m", "venv", venv])
    stamp = venv / ".dev-requirements"
    if not stamp.exists() or stamp.read_text().splitlines() != DEV_REQUIREMENTS:
        run([vpython, "-m", "pip", "install", "--quiet", *DEV_REQUIREMENTS])
        stamp.write_text("\n".join(DEV_REQUIREMENTS))
    wheels = base / f"wheels-{minor}"
    for old in wheels.glob("*.whl"):
        old.unlink()
    run(
        [venv / "bin" / "maturin", "build", "--release", "--quiet", "-i", vpython, "-o", wheels],
        env={"CARGO_TARGET_DIR": str(base / f"target-{minor}")},
    )
    run(
        [
            vpython,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--force-reinstall",
            "--no-deps",
            *wheels.glob("*.whl"),
        ]
    )
    return vpython


def test_version(minor: str) -> None:
    """pytest and the conformance suite on one Python version, with the installed wheel
    imported from outside the source tree."""
    vpython = version_venv(minor)
    cwd = ROOT / ".venv-versions"
    tests = ["-m", "pytest", "-q", "-p", "no:cacheprovider", ROOT / "tests", "--rootdir", ROOT]
    run([vpython, *tests], cwd=cwd)
    run([vpython, ROOT / "tests" / "conformance" / "run_asyncio_suite.py"], cwd=cwd)


def versions() -> None:
    """pytest and conformance on every supported Python other than the main one, or on the
    versions named after the command (`versions 3.14 3.15`)."""
    wanted = sys.argv[2:] or [v for v in SUPPORTED if v != "3.11"]
    for minor in wanted:
        if minor not in SUPPORTED:
            sys.exit(f"Python {minor} is not supported ({', '.join(SUPPORTED)})")
        test_version(minor)


def build_wheels() -> None:
    """Portable manylinux wheels for every supported Python (or the versions named after
    the command) into dist/, each installed into a fresh venv and smoke-tested
    (tools/wheels.py)."""
    wheels.main(sys.argv[2:], SUPPORTED, find_python)


def fuzz() -> None:
    """The differential fuzzers (tests/test_differential*.py) with fresh random seeds,
    batch after batch, for `--minutes N` (default 10); stops at the first failure and
    prints how many examples ran, with every batch's seed."""
    parser = argparse.ArgumentParser(prog="dev.py fuzz")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--examples", type=int, default=500, help="examples per batch")
    options = parser.parse_args(sys.argv[2:])
    build()
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("tests/test_differential*.py"))
    print(f"fuzz: {', '.join(files)}", flush=True)
    deadline = time.monotonic() + options.minutes * 60
    seeds: list[int] = []
    failed = False
    while time.monotonic() < deadline and not failed:
        seed = int.from_bytes(os.urandom(4), "little")
        seeds.append(seed)
        print(f"batch {len(seeds)}, seed {seed}", flush=True)
        env = {"FERROLOOP_FUZZ_SEED": str(seed), "FERROLOOP_FUZZ_EXAMPLES": str(options.examples)}
        tests = [venv_python(), "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *files]
        try:
            run([*tests, f"--hypothesis-seed={seed}"], env=env)
        except SystemExit:
            failed = True
    passed = len(seeds) - failed
    print(
        f"fuzz: {passed} batches passed ({passed * options.examples} examples per state "
        f"machine, {options.examples} per batch); seeds {seeds}"
    )
    if failed:
        sys.exit(f"fuzz: batch {len(seeds)} (seed {seeds[-1]}) failed")
    print("fuzz: no failure")


COMMANDS = {
    "build": build,
    "demo": demo,
    "test": test,
    "lint": lint,
    "conformance": conformance,
    "compat": compat,
    "upstream": lambda: (build(), upstream()),
    "bench": bench,
    "versions": versions,
    "pythons": install_pythons,
    "wheels": build_wheels,
    "fuzz": fuzz,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    args, _ = parser.parse_known_args()
    COMMANDS[args.command]()


if __name__ == "__main__":
    main()

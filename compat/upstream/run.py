#!/usr/bin/env python3
"""Runs anyio's, aiohttp's and uvicorn's own test suites on ferroloop and on asyncio's loop.

Usage: python3 compat/upstream/run.py [--loop asyncio|ferroloop] [--suite NAME ...] [--ci]
       (or python3 tools/dev.py upstream ...)

Without options: all three suites, whole, on both loops. `--ci` (tools/dev.py test) runs
them on ferroloop only and aiohttp's in part (CI_PATHS); a test that fails there is then
run on asyncio's loop too, to tell a ferroloop difference from the environment.

For each pinned library, its sdist from PyPI (cached in .upstream-cache/, outside git)
gives the tests; the same version's wheel, installed with the suite's test dependencies
in .venv-upstream (requirements.txt, pinned), is what they test. The package's own
source directory is removed from the unpacked sdist, so the tests import the wheel.
ferroloop comes from the source tree (PYTHONPATH=python, as `tools/dev.py build` leaves
it), and ferroloop_upstream.py (a pytest plugin) plugs it in.

A test that fails on ferroloop must be on the suite's list in expected.py, whose entries
are failures that asyncio's own loop has too (this machine's environment): a failure
of neither kind fails the run, and so does an entry that passes (the list only shrinks).
Listed tests (and the unjudged ones, UNJUDGED in expected.py) run apart from the others
(what they leave behind, such as sockets or child processes for the garbage collector,
would fail later tests). A failure is run once more before it counts
(timing-sensitive tests on 2 shared cores); a pass then is reported as flaky.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".upstream-cache"
VENV = ROOT / ".venv-upstream"
REQUIREMENTS = HERE / "requirements.txt"
LOOPS = ("ferroloop", "asyncio")

sys.path.insert(0, str(HERE))
from expected import EXPECTED_FAILURES, UNJUDGED  # noqa: E402

# name: (version, the package's source directory in the sdist, pytest options). The
# options replace the suite's addopts where those need tools we leave out (coverage) or
# choose their own parallelism; the rest of each suite's configuration stays as shipped.
SUITES = {
    "anyio": ("4.16.0", "src", ["-m", "not network"]),
    "aiohttp": (
        "3.14.5",
        "aiohttp",
        [
            "-o",
            "addopts=",
            "--strict-markers",
            "-m",
            "not dev_mode and not autobahn and not internal",
        ],
    ),
    "uvicorn": ("0.54.0", "uvicorn", ["-o", "addopts=", "--strict-config", "--strict-markers"]),
}


# What `--ci` runs (tools/dev.py test): every suite on ferroloop, aiohttp only in part
# (its whole suite takes too long for every CI run on two cores; see README.md).
# None: the whole suite.
CI_PATHS: dict[str, list[str] | None] = {
    "anyio": None,
    "uvicorn": None,
    "aiohttp": [
        "tests/test_client_functional.py",
        "tests/test_client_ws_functional.py",
        "tests/test_connector.py",
        "tests/test_helpers.py",
        "tests/test_web_functional.py",
        "tests/test_web_runner.py",
        "tests/test_web_websocket_functional.py",
    ],
}

# pytest-xdist workers per suite (aiohttp's and uvicorn's own configurations use xdist;
# anyio's does not). Two: these machines have two cores.
WORKERS = {"anyio": 0, "aiohttp": 2, "uvicorn": 2}


def log(message: str) -> None:
    print(f"[upstream] {message}", flush=True)


def ensure_venv() -> Path:
    """.venv-upstream with the pinned wheels and test dependencies (idempotent)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    stamp = VENV / ".requirements"
    wanted = REQUIREMENTS.read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        pip = [python, "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", REQUIREMENTS], check=True)
        stamp.write_text(wanted)
    return python


def ensure_tests(python: Path, name: str) -> Path:
    """The unpacked sdist of one suite, without the package's own sources."""
    version, package_dir, _ = SUITES[name]
    tree = CACHE / "src" / f"{name}-{version}"
    if (tree / ".ready").exists():
        return tree
    sdists = CACHE / "sdists"
    sdist = sdists / f"{name}-{version}.tar.gz"
    if not sdist.exists():
        spec = f"{name}=={version}"
        download = [python, "-m", "pip", "download", "--quiet", "--no-binary", ":all:"]
        subprocess.run([*download, "--no-deps", "-d", sdists, spec], check=True)
    if tree.exists():
        shutil.rmtree(tree)
    with tarfile.open(sdist) as archive:
        archive.extractall(tree.parent, filter="data")
    # The tests must import the installed wheel (compiled extensions and all).
    shutil.rmtree(tree / package_dir)
    (tree / ".ready").write_text("")
    return tree


def reset_signals() -> None:
    """A runner started in the background hands its children SIGINT and SIGHUP ignored;
    the suites send them to themselves and expect the defaults."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def pytest_run(python, tree, name, loop, results, log_path, extra) -> float:
    """One pytest run; the outcome of every test goes to `results` (JSON lines)."""
    _, _, options = SUITES[name]
    results.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        FERROLOOP_UPSTREAM_LOOP=loop,
        FERROLOOP_UPSTREAM_SUITE=name,
        FERROLOOP_UPSTREAM_RESULTS=str(results),
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(HERE)]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("VIRTUAL_ENV", None)
    cmd = [python, "-m", "pytest", "-p", "ferroloop_upstream", "-p", "no:cacheprovider"]
    cmd += [*options, "-q", "--color=no"]
    if WORKERS.get(name):
        cmd += ["-n", str(WORKERS[name])]  # pytest-xdist, as these suites run in their CI
    cmd += extra
    started = time.monotonic()
    with open(log_path, "w") as out:
        subprocess.run(
            [str(c) for c in cmd],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=reset_signals,
        )
    return time.monotonic() - started


def read_results(path: Path) -> tuple[dict[str, str], int]:
    """({test: outcome}, how many ferroloop loops the run made)."""
    outcomes: dict[str, str] = {}
    loops = 0
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "ferroloop_loops" in entry:
                loops = entry["ferroloop_loops"]
            else:
                outcomes[entry["nodeid"]] = entry["outcome"]
    return outcomes, loops


BAD = ("failed", "error")
# More failures than this are not run again one by one: something is broken outright.
MAX_RETRIES = 30


def run_suite(python, name, loop, paths=None) -> dict:
    """The suite on one loop: every test but the expected failures, a second run of what
    failed, and a run of the expected failures alone (kept apart: what they leave behind,
    such as sockets for the garbage collector, must not fail other tests)."""
    tree = ensure_tests(python, name)
    out = CACHE / "results"
    out.mkdir(parents=True, exist_ok=True)
    expected = sorted(EXPECTED_FAILURES.get(name, {}))
    apart = expected + sorted(UNJUDGED.get(name, {}))
    deselect = [arg for nodeid in apart for arg in ("--deselect", nodeid)]
    results, log_path = out / f"{name}-{loop}.jsonl", out / f"{name}-{loop}.log"
    log(f"{name} on {loop}: running (log {log_path.relative_to(ROOT)})")
    seconds = pytest_run(python, tree, name, loop, results, log_path, [*deselect, *(paths or [])])
    outcomes, loops = read_results(results)
    flaky = []
    again = sorted(n for n, o in outcomes.items() if o in BAD)
    if again and len(again) <= MAX_RETRIES:
        retry_results = out / f"{name}-{loop}-retry.jsonl"
        retry_log = out / f"{name}-{loop}-retry.log"
        log(f"{name} on {loop}: {len(again)} failed; running them once more")
        seconds += pytest_run(python, tree, name, loop, retry_results, retry_log, again)
        for nodeid, outcome in read_results(retry_results)[0].items():
            if nodeid in again and outcome == "passed":
                outcomes[nodeid] = "passed"
                flaky.append(nodeid)
    expected_outcomes = {}
    if apart:
        expected_results = out / f"{name}-{loop}-expected.jsonl"
        expected_log = out / f"{name}-{loop}-expected.log"
        seconds += pytest_run(python, tree, name, loop, expected_results, expected_log, apart)
        expected_outcomes, more_loops = read_results(expected_results)
        loops += more_loops
        for nodeid in UNJUDGED.get(name, {}):
            outcome = expected_outcomes.pop(nodeid, None)
            if outcome is not None:
                outcomes[nodeid] = outcome
    counts: dict[str, int] = {}
    for outcome in [*outcomes.values(), *expected_outcomes.values()]:
        counts[outcome] = counts.get(outcome, 0) + 1
    return {
        "suite": name,
        "loop": loop,
        "seconds": seconds,
        "counts": counts,
        "failures": sorted(n for n, o in outcomes.items() if o in BAD),
        "flaky": flaky,
        "ferroloop_loops": loops,
        "outcomes": outcomes,
        "expected_outcomes": expected_outcomes,
    }


def judge(report: dict) -> list[str]:
    """What is wrong with one run: unexpected failures, expected ones that no longer fail,
    and a run that did not use the loop it names."""
    unjudged = UNJUDGED.get(report["suite"], {})
    problems = [f"unexpected failure: {n}" for n in report["failures"] if n not in unjudged]
    if not report["outcomes"]:
        problems.append("no test ran (see the log)")
    loops = report["ferroloop_loops"]
    if report["loop"] == "ferroloop" and loops == 0:
        problems.append("no ferroloop loop was made: the plugin did not plug it in")
    if report["loop"] == "asyncio" and loops:
        problems.append(f"{loops} ferroloop loops were made in asyncio's run")
    for nodeid in EXPECTED_FAILURES.get(report["suite"], {}):
        outcome = report["expected_outcomes"].get(nodeid)
        if outcome not in BAD:
            problems.append(f"expected failure {outcome or 'not run'}: {nodeid} (remove it)")
    return problems


def summary_line(report: dict) -> str:
    c = report["counts"]
    parts = [f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped")]
    for extra in ("xfailed", "xpassed"):
        if c.get(extra):
            parts.append(f"{c[extra]} {extra}")
    if report["flaky"]:
        parts.append(f"{len(report['flaky'])} flaky")
    line = f"{report['suite']:8} {report['loop']:9} {', '.join(parts)} in {report['seconds']:.0f} s"
    expected = len(EXPECTED_FAILURES.get(report["suite"], {}))
    return f"{line} ({expected} of the failures expected)" if expected else line


def on_asyncio(python, report: dict, reports: list[dict]) -> dict[str, str]:
    """How the tests that failed on ferroloop fare on asyncio's loop: from this
    invocation's asyncio run of the suite, or from a run of just those tests."""
    for other in reports:
        if other["suite"] == report["suite"] and other["loop"] == "asyncio":
            return other["outcomes"]
    tree = ensure_tests(python, report["suite"])
    out = CACHE / "results"
    results = out / f"{report['suite']}-asyncio-diagnosis.jsonl"
    log_path = out / f"{report['suite']}-asyncio-diagnosis.log"
    log(f"{report['suite']}: running what failed on ferroloop on asyncio's loop")
    failures = report["failures_judged"]
    pytest_run(python, tree, report["suite"], "asyncio", results, log_path, failures)
    return read_results(results)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=LOOPS, action="append")
    parser.add_argument("--suite", choices=sorted(SUITES), action="append")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="what CI runs: ferroloop only (unless --loop), aiohttp's suite in part",
    )
    args = parser.parse_args()
    loops = args.loop or (["ferroloop"] if args.ci else LOOPS)
    python = ensure_venv()
    reports = []
    for name in args.suite or list(SUITES):
        paths = CI_PATHS[name] if args.ci else None
        for loop in loops:
            reports.append(run_suite(python, name, loop, paths))
            log(summary_line(reports[-1]))
    for report in reports:
        report["asyncio_outcomes"] = {}
        judged = [n for n in report["failures"] if n not in UNJUDGED.get(report["suite"], {})]
        if report["loop"] == "ferroloop" and judged:
            report["failures_judged"] = judged
            report["asyncio_outcomes"] = on_asyncio(python, report, reports)
    failed = False
    print()
    for report in reports:
        print(summary_line(report))
        for nodeid in report["flaky"]:
            print(f"    flaky (passed when run again): {nodeid}")
        for nodeid in UNJUDGED.get(report["suite"], {}):
            if report["outcomes"].get(nodeid) in BAD:
                print(f"    failed, not judged (see expected.py): {nodeid}")
        for problem in judge(report):
            print(f"    {problem}")
            failed = True
        for nodeid in report["failures"]:
            if nodeid in UNJUDGED.get(report["suite"], {}):
                continue
            there = report["asyncio_outcomes"].get(nodeid)
            if there in BAD:
                verdict = "fails there too: the environment? (expected.py, with the reason)"
            elif there:
                verdict = f"{there} there: a ferroloop difference to fix"
            else:
                continue
            print(f"    on asyncio's loop, {nodeid} {verdict}")
    brief = [{k: v for k, v in r.items() if "outcomes" not in k} for r in reports]
    (CACHE / "results" / "summary.json").write_text(json.dumps(brief, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

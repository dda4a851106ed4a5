"""pytest plugin that runs a library's own test suite on ferroloop (compat/upstream/).

Loaded with ``-p ferroloop_upstream``; the loop and the suite come from the environment:
FERROLOOP_UPSTREAM_LOOP ("asyncio" or "ferroloop") and FERROLOOP_UPSTREAM_SUITE
("anyio", "aiohttp" or "uvicorn"). With "asyncio" the plugin changes nothing: that run
tells a ferroloop failure from one of the environment.

How ferroloop is plugged in, as each suite chooses its loop:

* anyio's and uvicorn's async tests run in anyio's pytest plugin, whose asyncio runner
  takes a ``loop_factory`` backend option: every asyncio runner it makes without a
  factory of its own (uvloop's, for instance) gets ``ferroloop.new_event_loop``.
* aiohttp's tests make their loops with ``asyncio.new_event_loop`` (its pytest plugin's
  "pyloop"), and anyio's also call ``anyio.run`` and ``asyncio.new_event_loop``
  directly: for these two suites ferroloop's event-loop policy is installed, so that
  every loop asyncio would make is a ferroloop.
* uvicorn's suite is left asyncio's policy: its test_asyncio_run__default_loop_factory
  checks that a run without a loop factory gets the standard library's loop class.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest

LOOP = os.environ.get("FERROLOOP_UPSTREAM_LOOP", "asyncio")
SUITE = os.environ.get("FERROLOOP_UPSTREAM_SUITE", "")
POLICY_SUITES = {"anyio", "aiohttp"}


def _give_anyio_runners_ferroloop() -> None:
    """Wraps anyio's pytest plugin's get_runner so that an asyncio runner without a loop
    factory of its own gets ferroloop's."""
    import anyio.pytest_plugin as anyio_plugin
    import ferroloop

    original = anyio_plugin.get_runner

    @contextlib.contextmanager
    def get_runner(backend_name, backend_options):
        options = dict(backend_options or {})
        if backend_name == "asyncio" and options.get("loop_factory") is None:
            if not options.get("use_uvloop"):
                options["loop_factory"] = ferroloop.new_event_loop
        with original(backend_name, options) as runner:
            yield runner

    anyio_plugin.get_runner = get_runner


_loops_made = 0


def _count_ferroloop_loops() -> None:
    """Counts the ferroloop loops the run makes (the runner checks that a ferroloop run
    made some and an asyncio run none)."""
    from ferroloop import _loop

    original = _loop.Loop.__init__

    def __init__(self, *args, **kwargs):
        global _loops_made
        _loops_made += 1
        original(self, *args, **kwargs)

    _loop.Loop.__init__ = __init__


def pytest_configure(config: pytest.Config) -> None:
    _count_ferroloop_loops()
    if LOOP == "asyncio":
        return
    if LOOP != "ferroloop":
        raise pytest.UsageError(f"FERROLOOP_UPSTREAM_LOOP={LOOP!r}: asyncio or ferroloop")
    import ferroloop

    if SUITE in ("anyio", "uvicorn"):
        _give_anyio_runners_ferroloop()
    if SUITE in POLICY_SUITES:
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())


def pytest_report_header(config: pytest.Config) -> str:
    return f"ferroloop_upstream: suite {SUITE or '?'} on {LOOP}'s loop"


_RESULTS = os.environ.get("FERROLOOP_UPSTREAM_RESULTS")
_outcomes: dict[str, str] = {}
_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Records one outcome per test for compat/upstream/run.py: passed, failed (the test
    itself), error (its setup or teardown), skipped, xfailed or xpassed."""
    nodeid = report.nodeid
    _seconds[nodeid] = _seconds.get(nodeid, 0.0) + report.duration
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        if _outcomes.get(nodeid) != "error":
            _outcomes[nodeid] = outcome
    elif report.failed:
        _outcomes[nodeid] = "error"
    elif report.skipped:
        _outcomes.setdefault(nodeid, "xfailed" if hasattr(report, "wasxfail") else "skipped")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist: adds up the loops a worker made (the controller makes none)."""
    global _loops_made
    _loops_made += node.workeroutput.get("ferroloop_loops", 0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller records the outcomes
        workeroutput["ferroloop_loops"] = _loops_made
        return
    if _RESULTS:
        with open(_RESULTS, "w") as out:
            out.write(json.dumps({"ferroloop_loops": _loops_made}) + "\n")
            for nodeid, outcome in _outcomes.items():
                seconds = round(_seconds.get(nodeid, 0.0), 3)
                entry = {"nodeid": nodeid, "outcome": outcome, "seconds": seconds}
                out.write(json.dumps(entry) + "\n")

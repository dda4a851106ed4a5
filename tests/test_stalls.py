"""Stall reports: a loop stuck in its callbacks is reported while it is stuck (ferroloop)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import warnings

import ferroloop
import pytest

THRESHOLD = 0.05
BLOCK = 0.3


@pytest.fixture
def floop(guard):
    loop = ferroloop.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


class Recorder:
    """A stall handler that records reports and signals each one."""

    def __init__(self) -> None:
        self.reports: list[ferroloop.StallReport] = []
        self.threads: list[int] = []
        self.event = threading.Event()
        self.ended = threading.Event()

    def __call__(self, report: ferroloop.StallReport) -> None:
        self.reports.append(report)
        self.threads.append(threading.get_ident())
        self.event.set()
        if report.ended:
            self.ended.set()

    def wait_end(self) -> None:
        assert self.ended.wait(10), f"no end report; got {self.reports!r}"


def _this_line() -> int:
    return sys._getframe(1).f_lineno


def _block_until(predicate, at_least: float) -> None:
    """Blocks the loop at least `at_least` seconds, and on until `predicate()` (at most
    10 s): a watchdog that a loaded machine schedules late still reports during the block,
    and a missing report still fails the test."""
    started = time.monotonic()
    while not predicate() and time.monotonic() - started < 10:
        time.sleep(0.005)
    time.sleep(max(0.0, at_least - (time.monotonic() - started)))


# ctypes opens libffi's files on first use (3.15): done here, before any fd accounting.
_USLEEP = ctypes.PyDLL(None).usleep
_USLEEP(0)


def test_blocking_callback_is_reported_during_the_block_then_ended(floop):
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)
    seen_during_block = []
    lines = {}
    blocked = []

    def blocking():
        # Blocks BLOCK seconds, longer (up to 10 s) only if the report is late on a loaded
        # machine: either way the report must arrive while this callback still blocks.
        started = time.monotonic()
        lines["sleep"] = _this_line() + 2
        while not rec.event.is_set() and time.monotonic() - started < 10:
            time.sleep(0.005)
        seen_during_block.append(rec.event.is_set())
        time.sleep(max(0.0, BLOCK - (time.monotonic() - started)))
        blocked.append(time.monotonic() - started)

    floop.call_soon(blocking)
    floop.call_soon(floop.stop)
    floop.run_forever()
    rec.wait_end()
    assert seen_during_block == [True], "the handler did not run while the loop was blocked"
    assert [r.ended for r in rec.reports] == [False, True]
    first, end = rec.reports
    assert THRESHOLD <= first.duration < blocked[0]
    assert first.captured and first.threshold == THRESHOLD
    assert "blocking" in first.callback and first.callback.startswith("<Handle ")
    innermost = [f for f in first.stack if f.name.endswith("blocking")]
    assert innermost, first.stack
    assert innermost[-1].filename == __file__
    assert innermost[-1].lineno == lines["sleep"]
    assert first.stack[-1].name.endswith("blocking")
    assert BLOCK * 0.9 <= end.duration < blocked[0] + 5
    assert end.stack == first.stack and end.captured
    assert set(rec.threads) != {threading.get_ident()}, "the handler ran on the loop thread"


async def _level3():
    time.sleep(BLOCK)


async def _level2():
    await _level3()


async def _level1():
    await _level2()


def test_blocking_task_is_named_with_its_await_chain(floop):
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)

    async def main():
        await asyncio.create_task(_level1(), name="the-blocker")

    floop.run_until_complete(main())
    rec.wait_end()
    first = rec.reports[0]
    assert not first.ended
    assert "the-blocker" in first.task
    assert [f.name for f in first.await_chain] == ["_level1", "_level2", "_level3"]
    assert first.await_chain[-1].line == "time.sleep(BLOCK)"
    assert "the-blocker" in first.callback  # a task step is shown as its task, as asyncio does


def test_tight_python_loop_is_caught(floop):
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)

    def spin():
        deadline = time.monotonic() + BLOCK
        # Only built-ins are called, so the innermost Python frame is this one.
        while time.monotonic() < deadline and not rec.reports:
            pass
        while time.monotonic() < deadline:
            pass

    floop.call_soon(spin)
    floop.call_soon(floop.stop)
    floop.run_forever()
    rec.wait_end()
    first = rec.reports[0]
    assert first.captured and first.stack[-1].name.endswith("spin")
    # Inside the spinning loop: its condition or its body (3.15 may stop on either).
    line = first.stack[-1].line
    assert "while time.monotonic() < deadline" in line or line == "pass"
    assert BLOCK * 0.9 <= rec.reports[1].duration


def test_idle_loop_is_never_reported(floop):
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)
    floop.run_until_complete(asyncio.sleep(1.0))
    assert rec.reports == []


def test_many_short_callbacks_are_never_reported(floop):
    rec = Recorder()
    threshold = 0.25  # 50 times a callback's length: room for a loaded machine
    floop.set_stall_handler(threshold, rec)
    deadline = time.monotonic() + 1.0
    count = 0

    def short():
        nonlocal count
        count += 1
        time.sleep(0.005)
        if time.monotonic() < deadline:
            floop.call_soon(short)
        else:
            floop.stop()

    floop.call_soon(short)
    floop.run_forever()
    assert count > 20
    assert rec.reports == []


def test_handler_raising_does_not_hurt_the_loop(floop, caplog):
    calls = []

    def bad(report):
        calls.append(report)
        raise RuntimeError("handler bug")

    floop.set_stall_handler(THRESHOLD, bad)
    with caplog.at_level(logging.ERROR, logger="ferroloop"):
        floop.call_soon(_block_until, lambda: calls, 0.2)
        floop.call_soon(floop.stop)
        floop.run_forever()
        assert floop.run_until_complete(asyncio.sleep(0.01, "ok")) == "ok"
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [r.ended for r in calls] == [False, True]
    assert any("handler bug" in r.getMessage() or r.exc_info for r in caplog.records)


def test_turning_the_handler_off_stops_reports(floop):
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)
    assert floop.get_stall_handler() == (THRESHOLD, rec)
    floop.set_stall_handler(None)
    assert floop.get_stall_handler() is None
    floop.call_soon(time.sleep, 0.2)
    floop.call_soon(floop.stop)
    floop.run_forever()
    floop.set_stall_handler(THRESHOLD, None)
    floop.call_soon(time.sleep, 0.2)
    floop.call_soon(floop.stop)
    floop.run_forever()
    time.sleep(0.1)
    assert rec.reports == []
    assert not [t for t in threading.enumerate() if t.name == "ferroloop-stall"]


def _watchdog_threads() -> int:
    """OS threads of this process named by the watchdog (Rust threads are not in
    `threading.enumerate()`)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                count += f.read().startswith("ferroloop-stall")
        except OSError:
            pass
    return count


def test_closing_the_loop_stops_the_watchdog_thread(guard):
    before = _watchdog_threads()
    loop = ferroloop.new_event_loop()
    try:
        loop.set_stall_handler(THRESHOLD, Recorder())
        # The thread names itself once it runs.
        deadline = time.monotonic() + 10
        while _watchdog_threads() == before and time.monotonic() < deadline:
            time.sleep(0.005)
        assert _watchdog_threads() == before + 1
    finally:
        loop.close()
    assert _watchdog_threads() == before


def test_closing_during_a_reported_stall_stops_the_watchdog(guard):
    before = _watchdog_threads()
    loop = ferroloop.new_event_loop()
    rec = Recorder()
    loop.set_stall_handler(THRESHOLD, rec)
    loop.call_soon(lambda: rec.event.wait(10))
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.close()
    assert _watchdog_threads() == before
    del loop
    gc.collect()


def test_default_handler_logs_warning_with_the_stack(floop, caplog):
    floop.set_stall_handler(THRESHOLD)
    with caplog.at_level(logging.WARNING, logger="ferroloop"):
        floop.call_soon(_block_until, lambda: caplog.records, 0.25)
        floop.call_soon(floop.stop)
        floop.run_forever()
        deadline = time.monotonic() + 10
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.name == "ferroloop"]
    assert len(messages) == 2, messages
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "ferroloop")
    assert messages[0].startswith("Event loop stalled: blocked for ")
    assert "Stack of the loop thread" in messages[0] and "_block_until" in messages[0]
    assert messages[1].startswith("Event loop stall ended after ")


def test_environment_switch_turns_the_default_handler_on():
    code = (
        "import asyncio, time, ferroloop\n"
        "loop = ferroloop.new_event_loop()\n"
        "print(loop.get_stall_handler())\n"
        "loop.call_soon(time.sleep, 1.0)\n"
        "loop.call_soon(loop.stop)\n"
        "loop.run_forever()\n"
        "time.sleep(0.2)\n"
        "loop.close()\n"
    )
    env = dict(os.environ, FERROLOOP_STALL_MS="50")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "(0.05, <function log_stall" in result.stdout
    assert "Event loop stalled: blocked for" in result.stderr
    assert "Event loop stall ended after" in result.stderr


def test_invalid_threshold_is_refused(floop):
    with pytest.raises(ValueError):
        floop.set_stall_handler(0, Recorder())
    with pytest.raises(TypeError):
        floop.set_stall_handler(1.0, "not callable")
    floop.close()
    with pytest.raises(RuntimeError):
        floop.set_stall_handler(1.0, Recorder())


def test_handler_may_turn_reporting_off_or_replace_itself(floop):
    before = _watchdog_threads()
    rec = Recorder()

    def first(report):
        floop.set_stall_handler(None)  # from the watchdog thread itself: must not deadlock
        rec(report)

    floop.set_stall_handler(THRESHOLD, first)
    floop.call_soon(_block_until, rec.event.is_set, 0.2)
    floop.call_soon(floop.stop)
    floop.run_forever()
    assert rec.event.wait(10)
    floop.set_stall_handler(THRESHOLD, rec)  # a new watchdog; the old one stays stopped
    rec.event.clear()
    floop.call_soon(_block_until, rec.event.is_set, 0.2)
    floop.call_soon(floop.stop)
    floop.run_forever()
    rec.wait_end()
    assert [r.ended for r in rec.reports] == [False, False, True]
    floop.set_stall_handler(None)
    deadline = time.monotonic() + 10
    while _watchdog_threads() > before and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _watchdog_threads() == before


def test_a_c_call_holding_the_gil_gets_only_an_end_report_saying_so(floop):
    # A PyDLL function keeps the GIL while it runs: the watchdog cannot look inside.
    usleep = _USLEEP
    rec = Recorder()
    floop.set_stall_handler(THRESHOLD, rec)
    started = time.monotonic()
    floop.call_soon(usleep, int(2 * BLOCK * 1e6))
    floop.call_soon(floop.stop)
    floop.run_forever()
    blocked = time.monotonic() - started
    rec.wait_end()
    assert len(rec.reports) == 1, rec.reports
    (end,) = rec.reports
    assert end.ended and not end.captured and end.stack == ()
    assert 2 * BLOCK * 0.9 <= end.duration <= blocked + 1
    assert "could not be taken during the stall" in end.format()


def _child_status_within(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None (after killing it) when it has not exited in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def _in_forked_child(loop, rec: Recorder) -> int:
    """What the child checks, as an exit code (0: all good)."""
    before = _watchdog_threads()
    loop.stats()
    # Running the loop starts a watchdog in place of the parent's thread.
    loop.call_soon(_block_until, rec.event.is_set, 0.2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    if not rec.ended.wait(10):
        return 3
    if [r.ended for r in rec.reports] != [False, True] or not rec.reports[0].captured:
        return 4
    if _watchdog_threads() != before + 1:
        return 5
    loop.set_stall_handler(THRESHOLD, Recorder())  # replacing it joins the child's thread
    loop.close()
    return 0 if _watchdog_threads() == before else 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_and_closes_the_loop_with_a_watchdog_of_its_own(guard):
    loop = ferroloop.new_event_loop()
    try:
        rec = Recorder()
        loop.set_stall_handler(THRESHOLD, rec)
        deadline = time.monotonic() + 10
        while not _watchdog_threads() and time.monotonic() < deadline:
            time.sleep(0.005)
        with warnings.catch_warnings():
            # 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks".
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _in_forked_child(loop, rec)
            finally:
                os._exit(status)
        status = _child_status_within(pid, 60)
        assert status is not None, "the child hung (joining a watchdog thread it does not have?)"
        assert status == 0, f"the child failed check {status} (see _in_forked_child)"
        assert rec.reports == [], "the parent's loop never stalled"
    finally:
        loop.close()

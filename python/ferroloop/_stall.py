"""Stall reports: what held the event loop, told while it is still held.

The Rust run loop moves a counter on when it leaves and comes back to its poller; a
watchdog thread (Rust, without the GIL while it waits) samples it on its own clock and
calls `_StallWatch` when one stretch of callbacks outlasts the threshold, and again when
it ends. The
capture here runs on the watchdog thread with the GIL: the loop thread is parked inside
its callback (it gives the GIL up every switch interval when running Python, at once in
`time.sleep` or I/O), so its stack is the stack that holds the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import inspect
import linecache
import logging
import os
import sys
import warnings
import weakref

from ._describe import format_handle

logger = logging.getLogger("ferroloop")

_COROUTINE_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR
_ENVIRONMENT = "FERROLOOP_STALL_MS"
_DEFAULT = object()


@dataclasses.dataclass(frozen=True)
class StallFrame:
    """One frame of a stall report: where, and the source line when it can be read."""

    filename: str
    lineno: int
    name: str
    line: str = ""

    def __str__(self) -> str:
        text = f'  File "{self.filename}", line {self.lineno}, in {self.name}'
        return f"{text}\n    {self.line}" if self.line else text


@dataclasses.dataclass(frozen=True)
class StallReport:
    """A stall of the event loop: one stretch of callbacks longer than the threshold.

    A report with `ended` false is made while the loop is still stuck; `duration` is how
    long it had been stuck then, and `stack` is the loop thread's Python stack at that
    moment (outermost frame first). The report with `ended` true follows when the loop
    is back in its poller; `duration` is the stall's total length and the stack fields
    repeat what the first report captured. `captured` is false when the stack could not
    be taken during the stall (the loop thread held the GIL throughout, in C code); then
    only the end report is made.
    """

    ended: bool
    duration: float
    threshold: float
    captured: bool
    stack: tuple[StallFrame, ...] = ()
    callback: str | None = None
    task: str | None = None
    await_chain: tuple[StallFrame, ...] = ()
    thread_id: int | None = None

    def format(self) -> str:
        """The report as the default handler logs it."""
        if self.ended:
            text = f"Event loop stall ended after {self.duration:.3f} seconds"
            if not self.captured:
                text += (
                    " (the stack could not be taken during the stall: the loop thread "
                    "held the GIL throughout, e.g. in a C call)"
                )
            if self.callback:
                text += f"; it was running {self.callback}"
            return text
        lines = [
            f"Event loop stalled: blocked for {self.duration:.3f} seconds so far "
            f"(threshold {self.threshold:.3f}) running {self.callback}"
        ]
        if self.task:
            lines.append(f"Task: {self.task}")
        if self.await_chain:
            lines.append("Await chain (outermost first):")
            lines.extend(str(f) for f in self.await_chain)
        if self.stack:
            lines.append("Stack of the loop thread (most recent call last):")
            lines.extend(str(f) for f in self.stack)
        return "\n".join(lines)


def log_stall(report: StallReport) -> None:
    """The default stall handler: the report on the 'ferroloop' logger at WARNING."""
    logger.warning("%s", report.format())


def _frame_of(frame) -> StallFrame:
    code = frame.f_code
    line = linecache.getline(code.co_filename, frame.f_lineno).strip()
    name = getattr(code, "co_qualname", code.co_name)
    return StallFrame(code.co_filename, frame.f_lineno, name, line)


def _stack_of(frame) -> list:
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _await_chain(task, frames) -> tuple[StallFrame, ...]:
    """The task's coroutines, outermost first: those on the loop thread's stack from the
    task's own coroutine inward (a running coroutine has no `cr_await`), then whatever
    the innermost one awaits."""
    coro = task.get_coro()
    top = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    chain = []
    inside = False
    for frame in frames:
        inside = inside or frame is top
        if inside and frame.f_code.co_flags & _COROUTINE_FLAGS:
            chain.append(_frame_of(frame))
    if not inside:
        awaited = coro
        while awaited is not None and len(chain) < 100:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            chain.append(_frame_of(frame))
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return tuple(chain)


def _task_of(loop, handle):
    try:
        task = asyncio.current_task(loop)
    except RuntimeError:
        task = None
    if task is None and handle is not None:
        owner = getattr(handle._callback, "__self__", None)
        if isinstance(owner, asyncio.Future) and hasattr(owner, "get_coro"):
            task = owner
    return task


class _StallWatch:
    """What the Rust watchdog calls: `("start", seconds, live)` then `("end", seconds,
    True)`. Holds the loop weakly so that the thread never keeps it alive."""

    def __init__(self, loop, threshold: float, handler):
        self._loop = weakref.ref(loop)
        self.threshold = threshold
        self.handler = handler
        self._first: StallReport | None = None

    def __call__(self, kind: str, seconds: float, live: bool) -> None:
        loop = self._loop()
        if loop is None:
            return
        if kind == "start":
            if not live:
                self._first = None
                return
            report = self._first = self._capture(loop, seconds)
        else:
            first = self._first
            self._first = None
            if first is None:
                report = StallReport(
                    ended=True, duration=seconds, threshold=self.threshold, captured=False
                )
            else:
                report = dataclasses.replace(first, ended=True, duration=seconds)
        try:
            self.handler(report)
        except Exception:
            logger.exception("Stall handler %r raised", self.handler)

    def _capture(self, loop, seconds: float) -> StallReport:
        thread_id = loop._thread_id
        frame = sys._current_frames().get(thread_id) if thread_id is not None else None
        frames = _stack_of(frame)
        handle = loop._stall_current_handle()
        task = _task_of(loop, handle)
        return StallReport(
            ended=False,
            duration=seconds,
            threshold=self.threshold,
            captured=frame is not None,
            stack=tuple(_frame_of(f) for f in frames),
            callback=format_handle(handle) if handle is not None else None,
            task=repr(task) if task is not None else None,
            await_chain=_await_chain(task, frames) if task is not None else (),
            thread_id=thread_id,
        )


# Loops whose watchdog runs: stopped at exit, before the interpreter starts finalizing
# (a thread that wants the GIL after that point cannot be let in).
_watched: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_watchdogs() -> None:
    for loop in list(_watched):
        try:
            loop._set_stall_watch(None, None)
        except Exception:
            pass


# Methods of ferroloop.Loop (assigned in its class body).


def set_stall_handler(self, threshold, handler=_DEFAULT):
    """Reports every stretch of callbacks longer than `threshold` seconds, while it
    runs, to `handler(report)` (a `ferroloop.StallReport`), and again when it ends.

    `handler` is called on the watchdog thread, not the loop's: it must be
    thread-safe, should be quick, and must not touch the loop except through
    thread-safe methods. Left out, it is `ferroloop.log_stall` (a WARNING on the
    'ferroloop' logger); `set_stall_handler(None)` or a handler of None turns
    reporting off. Exceptions from the handler are logged and otherwise ignored.
    """
    if handler is _DEFAULT:
        handler = log_stall
    if threshold is None or handler is None:
        self._set_stall_watch(None, None)
        self._stall_watch = None
        _watched.discard(self)
        return
    if not callable(handler):
        raise TypeError(f"a callable or None is expected, got {handler!r}")
    threshold = float(threshold)
    watch = _StallWatch(self, threshold, handler)
    self._set_stall_watch(threshold, watch)
    self._stall_watch = watch
    _watched.add(self)


def get_stall_handler(self):
    """`(threshold, handler)` while stall reporting is on, else None."""
    watch = self._stall_watch
    return None if watch is None else (watch.threshold, watch.handler)


def init_stall_from_environment(self):
    value = os.environ.get(_ENVIRONMENT)
    if not value or sys.flags.ignore_environment:
        return
    try:
        milliseconds = float(value)
        if not milliseconds > 0:
            raise ValueError(value)
    except ValueError:
        warnings.warn(
            f"ignoring {_ENVIRONMENT}={value!r}: not a positive number of milliseconds",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    self.set_stall_handler(milliseconds / 1000)

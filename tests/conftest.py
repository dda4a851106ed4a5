"""Fixtures shared by the loop-core behaviour suite.

Every behaviour test takes the ``loop`` (or ``loop_factory``) fixture, which is
parametrised over asyncio's own selector loop and ferroloop.  The asyncio run
proves the test is right; the ferroloop run checks the drop-in replacement.

Each test is guarded against silent failures:

* an unexpected call of the loop's exception handler (``exc_handler`` records
  every call; tests that expect one must take it with ``exc_handler.pop()``);
* leaked file descriptors (``/proc/self/fd`` is counted before and after, once
  the loop is closed);
* unraisable exceptions, exceptions escaping threads, and RuntimeWarning or
  ResourceWarning (e.g. a coroutine never awaited, a loop never closed);
* a running loop left registered.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import ssl
import sys
import threading
import warnings

import pytest

LOOP_KINDS = ["asyncio", "ferroloop"]

_warmed_up: set[str] = set()


def make_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A fresh loop of the requested kind."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    import ferroloop

    return ferroloop.new_event_loop()


def _warm_up(kind: str) -> None:
    """Create and close one loop so process-wide one-time state is not counted as a leak."""
    if kind in _warmed_up:
        return
    make_loop(kind).close()
    _warmed_up.add(kind)


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd listdir itself used, already closed
            pass
    return fds


class ExceptionRecorder:
    """An exception handler that records every ``(loop, context)`` it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, dict]] = []

    def __call__(self, loop: object, context: dict) -> None:
        self.calls.append((loop, context))

    @property
    def contexts(self) -> list[dict]:
        return [context for _, context in self.calls]

    def pop(self, count: int = 1) -> list[dict]:
        """Consume exactly ``count`` recorded calls and return their contexts."""
        contexts = self.contexts
        assert len(contexts) == count, (
            f"expected {count} exception handler call(s), got {len(contexts)}: {contexts!r}"
        )
        self.calls.clear()
        return contexts

    def pop_one(self) -> dict:
        return self.pop(1)[0]


class Guard:
    """Collects unraisable exceptions and exceptions raised in threads."""

    def __init__(self) -> None:
        self.unraisable: list[str] = []
        self.thread_errors: list[str] = []
        # Set by fixtures that already ran a full collection at teardown.
        self.collected = False

    def _unraisablehook(self, unraisable: object) -> None:
        self.unraisable.append(
            f"{unraisable.exc_type.__name__}: {unraisable.exc_value!r} "
            f"({unraisable.err_msg}, object={unraisable.object!r})"
        )

    def _threading_excepthook(self, args: object) -> None:
        self.thread_errors.append(f"{args.exc_type.__name__}: {args.exc_value!r} in {args.thread}")


@pytest.fixture
def guard():
    """Fail the test on leaked fds, unraisable exceptions or exceptions in threads."""
    state = Guard()
    old_unraisablehook = sys.unraisablehook
    old_excepthook = threading.excepthook
    sys.unraisablehook = state._unraisablehook
    threading.excepthook = state._threading_excepthook
    fds_before = _open_fds()
    try:
        yield state
        if not state.collected:
            gc.collect()
    finally:
        sys.unraisablehook = old_unraisablehook
        threading.excepthook = old_excepthook
    assert not state.unraisable, f"unraisable exceptions: {state.unraisable}"
    assert not state.thread_errors, f"exceptions in threads: {state.thread_errors}"
    assert asyncio.events._get_running_loop() is None, "a running loop was left registered"
    fds_after = _open_fds()
    opened = {fd: target for fd, target in fds_after.items() if fds_before.get(fd) != target}
    closed = {fd: target for fd, target in fds_before.items() if fds_after.get(fd) != target}
    assert len(fds_after) == len(fds_before), (
        f"leaked {len(fds_after) - len(fds_before)} file descriptor(s): "
        f"opened {opened}, closed {closed}"
    )


@pytest.fixture
def exc_handler() -> ExceptionRecorder:
    return ExceptionRecorder()


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request) -> str:
    # ``@pytest.mark.asyncio_since((3, 11))``: asyncio's loop lacks the behaviour before
    # that Python version; ferroloop still runs the test on every version.
    since = request.node.get_closest_marker("asyncio_since")
    if since is not None and request.param == "asyncio" and sys.version_info < since.args[0]:
        version = ".".join(map(str, since.args[0]))
        pytest.skip(f"asyncio's loop behaves this way from Python {version}")
    # Runs before ``guard`` starts counting fds.
    _warm_up(request.param)
    return request.param


@pytest.fixture
def loop(loop_kind, guard, exc_handler):
    """A fresh loop of each kind, with a recording exception handler installed."""
    loop = make_loop(loop_kind)
    loop.set_exception_handler(exc_handler)
    try:
        yield loop
    finally:
        if not loop.is_closed():
            loop.close()
        # Pending tasks or futures with unretrieved exceptions report on collection.
        gc.collect()
        guard.collected = True
    leftover = exc_handler.contexts
    assert not leftover, f"unexpected exception handler call(s): {leftover!r}"


@pytest.fixture
def loop_factory(loop_kind, guard):
    """A zero-argument callable returning a fresh loop of each kind."""
    return lambda: make_loop(loop_kind)


@pytest.fixture
def sockpair(loop):
    """A connected non-blocking socket pair, closed before the loop is."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def restore_signals():
    """Make stray SIGUSR1/SIGUSR2 harmless, and restore signal handlers and the wakeup fd.

    A loop that fails to install its handler must fail the test, not kill pytest, so
    the signals the tests send go to a recording Python handler until a loop takes
    them over.
    """
    signums = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT]
    saved = {signum: signal.getsignal(signum) for signum in signums}
    stray = []
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, lambda sig, frame: stray.append(sig))
    try:
        yield stray
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
    assert not stray, f"signal(s) {stray} reached no loop handler"


class Flavour:
    """The module-level API of one loop implementation, under common names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "asyncio":
            self.module = asyncio
            self.policy_name = "DefaultEventLoopPolicy"
            self.run = asyncio.run
            self.new_event_loop = asyncio.new_event_loop
            self.Loop = asyncio.SelectorEventLoop
            self.install_policy = lambda: asyncio.set_event_loop_policy(self.EventLoopPolicy())
        else:
            import ferroloop

            self.module = ferroloop
            self.policy_name = "EventLoopPolicy"
            self.run = ferroloop.run
            self.new_event_loop = ferroloop.new_event_loop
            self.Loop = ferroloop.Loop
            self.install_policy = ferroloop.install

    @property
    def EventLoopPolicy(self):  # noqa: N802 (the name it has in both modules)
        """The policy class, without the DeprecationWarning naming it gives on 3.14+."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return getattr(self.module, self.policy_name)

    def install(self):
        """Installs the kind's policy, without the DeprecationWarning it gives on 3.14+."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.install_policy()


@pytest.fixture
def api(loop_kind, guard):
    """The package API of each kind; the global event loop policy is restored afterwards."""
    saved_policy = asyncio.events._event_loop_policy
    try:
        yield Flavour(loop_kind)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(saved_policy)


def pytest_collection_finish(session):
    """The guard runs a full garbage collection after every test; move everything that
    exists before the first test into the permanent generation so that stays cheap."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items):
    """Turn RuntimeWarning (e.g. "coroutine ... was never awaited") and ResourceWarning
    (e.g. "unclosed event loop") into errors in the guarded behaviour tests; raised from
    a finalizer they arrive as unraisable exceptions, which the guard reports."""
    for item in items:
        if "guard" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.filterwarnings("error::RuntimeWarning"))
            item.add_marker(pytest.mark.filterwarnings("error::ResourceWarning"))
            # Older pytest versions report what the guard would catch as these warnings.
            item.add_marker(
                pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
            )
            item.add_marker(
                pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
            )


@pytest.fixture(params=["unix", "tcp"])
def stream_kit(request, loop):
    """A transport_support.StreamKit on ``loop`` over Unix socketpairs or loopback TCP;
    everything it handed out is closed before the loop is."""
    from transport_support import StreamKit

    kit = StreamKit(loop, request.param)
    try:
        yield kit
    finally:
        kit.close_all()


# -- TLS: a throw-away CA and a certificate for "ferroloop.test", made with trustme ------


@pytest.fixture(scope="session")
def ca():
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def server_context(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("ferroloop.test").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_context(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context

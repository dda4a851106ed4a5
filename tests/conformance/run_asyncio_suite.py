#!/usr/bin/env python3
"""Run CPython's own asyncio test suite (``test.test_asyncio``) against an event loop.

    python tests/conformance/run_asyncio_suite.py [--loop MODULE:FACTORY]
        [--expected FILE] [--only PATTERN ...] [--json OUT] [--write-expected]
        [--jobs N] [--timeout-per-test S]

The tests are imported from the interpreter's ``test`` package; nothing is
copied. The loop under test reaches them in one of two ways (see ``MODULES``):

* harness: a loop-generic CPython mixin (or a class bound to
  ``asyncio.SelectorEventLoop``) is subclassed so that the hook that builds its
  loop (``create_event_loop``, ``new_loop`` or ``setUp``) calls the factory;
* policy: the class runs unchanged while an event-loop policy whose
  ``new_event_loop()`` calls the factory is installed (``asyncio.run``,
  ``asyncio.Runner`` and ``IsolatedAsyncioTestCase`` all end up there), and
  ``asyncio.EventLoop``, which tests pass as ``loop_factory`` from 3.14 on, makes
  the factory's loop too.

Everything else is excluded with a reason. A test that never created a loop
through the factory is reported as ``no-loop`` and left out of the totals.

Each module runs in its own worker process; a test that hangs past the
per-test limit or crashes its worker is recorded and a new worker carries on
after it. Outcomes are compared with the expected-failures file: a new failure
or an unexpected pass makes the exit status 1. A new failure is first run once
more on its own (``--retries``): one that passes then is printed as ``FLAKY``
with its first failure, and counts as passed; one that fails again stays a
failure. The last line printed is
``conformance: N passed, N failed, N skipped`` where "failed" counts only those
unexpected outcomes.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import importlib
import inspect
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest

PKG = "test.test_asyncio"
SCRIPT = os.path.abspath(__file__)
DEFAULT_EXPECTED = os.path.join(os.path.dirname(SCRIPT), "expected_failures.txt")
DETAIL_LIMIT = 4000

# ---------------------------------------------------------------------------
# What runs. Written against CPython 3.10-3.15. Per module:
#   harness:  {our class name: (hook, base names...)}; a base name is an
#             attribute of the module or "utils.X" (test.test_asyncio.utils).
#   policy:   CPython classes run unchanged under the factory's policy
#             (a name missing in this Python version is ignored).
#   classes:  {CPython class: reason it is excluded}.
#   tests:    {test method: reason it is excluded} (any class of the module).
# A class found in a module but named nowhere here is excluded as "not
# reviewed"; so is every class of a module that is not in MODULES.
# ---------------------------------------------------------------------------

TWIN = "the mixin bound to asyncio.SelectorEventLoop with one selector; runs once as {}"
WINDOWS = "Windows only"
TESTLOOP = "asyncio's own mock-time test_utils.TestLoop or a mocked loop, not a real loop"
WATCHER = "SubprocessMixin bound to one of asyncio's child watchers (asyncio's own reaping)"
TASK_MIX = "another C/Python mix of asyncio's own Task/Future classes (repeats the tests run)"
SENDFILE_NATIVE = "replaces the loop's private _sendfile_native with BaseEventLoop's"

MODULES: dict[str, dict] = {
    "test_events": {
        "harness": {
            "EventLoopTests": (
                "create_event_loop",
                "EventLoopTestsMixin",
                "SubprocessTestsMixin",
                "utils.TestCase",
            ),
            # 3.14+: pipe objects (pipes, FIFOs, sockets, ttys) accepted or rejected by
            # connect_read_pipe/connect_write_pipe; its setUp makes a SelectorEventLoop.
            "UnixPipeObjectSupportTests": ("setUp_loop", "UnixPipeObjectSupportTests"),
        },
        "policy": ["TestCGetEventLoop", "TestServer"],
        "classes": {
            "EPollEventLoopTests": TWIN.format("EventLoopTests"),
            "PollEventLoopTests": TWIN.format("EventLoopTests"),
            "SelectEventLoopTests": TWIN.format("EventLoopTests"),
            "KqueueEventLoopTests": TWIN.format("EventLoopTests"),
            "ProactorEventLoopTests": WINDOWS,
            "HandleTests": "asyncio.Handle itself, on a mock loop",
            "TimerTests": "asyncio.TimerHandle itself",
            "AbstractEventLoopTests": "AbstractEventLoop's NotImplementedError stubs",
            "TestAbstractServer": "AbstractServer's NotImplementedError stubs",
            "PolicyTests": "asyncio's policy classes, no loop",
            "TestPyGetEventLoop": "swaps in the pure-Python _get_running_loop, which a loop "
            "using the C accelerator never sets (TestCGetEventLoop runs)",
        },
        "tests": {
            "test_create_server_multiple_hosts_ipv4": "mocks asyncio.base_events.socket "
            "and BaseEventLoop._start_serving",
            "test_create_server_multiple_hosts_ipv6": "mocks asyncio.base_events.socket "
            "and BaseEventLoop._start_serving",
            "test_internal_fds": "BaseSelectorEventLoop's private _internal_fds/_csock",
            "test_timeout_rounding": "replaces the private _run_once, reads _selector",
            "test_prompt_cancellation": "calls the selector loop's private _stop_serving()",
        },
    },
    "test_sock_lowlevel": {
        "harness": {
            "SockTests": ("create_event_loop", "BaseSockTestsMixin", "utils.TestCase"),
        },
        "classes": {
            "EPollEventLoopTests": TWIN.format("SockTests"),
            "PollEventLoopTests": TWIN.format("SockTests"),
            "SelectEventLoopTests": TWIN.format("SockTests"),
            "KqueueEventLoopTests": TWIN.format("SockTests"),
            "ProactorEventLoopTests": WINDOWS,
        },
    },
    "test_sendfile": {
        "harness": {
            "SendfileTests": ("create_event_loop", "SendfileTestsBase", "utils.TestCase"),
        },
        "classes": {
            "EPollEventLoopTests": TWIN.format("SendfileTests"),
            "PollEventLoopTests": TWIN.format("SendfileTests"),
            "SelectEventLoopTests": TWIN.format("SendfileTests"),
            "KqueueEventLoopTests": TWIN.format("SendfileTests"),
            "ProactorEventLoopTests": WINDOWS,
        },
        "tests": {
            "test_sendfile_force_fallback": SENDFILE_NATIVE,
            "test_sendfile_force_unsupported_native": SENDFILE_NATIVE,
            "test_sendfile_fallback_close_peer_in_the_middle_of_receiving": SENDFILE_NATIVE,
            "test_sendfile_no_fallback_for_fallback_transport": "mock transport with "
            "asyncio's private _sendfile_compatible",
        },
    },
    "test_buffered_proto": {
        "harness": {"BufferedProtocolTests": ("new_loop", "BufferedProtocolSelectorTests")},
        "classes": {
            "BufferedProtocolSelectorTests": TWIN.format("BufferedProtocolTests"),
            "BufferedProtocolProactorTests": WINDOWS,
        },
    },
    "test_server": {
        "harness": {"StartServerTests": ("new_loop", "SelectorStartServerTests")},
        "policy": ["TestServer2", "UnixServerCleanupTests"],
        "classes": {
            "SelectorStartServerTests": TWIN.format("StartServerTests"),
            "ProactorStartServerTests": WINDOWS,
        },
        "tests": {
            "test_start_server_1": "asserts Server's private _sockets/_waiters",
            "test_start_unix_server_1": "asserts Server's private _sockets/_waiters",
        },
    },
    "test_sslproto": {
        "harness": {"StartTLSTests": ("new_loop", "SelectorStartTLSTests")},
        "policy": ["SslProtoHandshakeTests"],
        "classes": {
            "SelectorStartTLSTests": TWIN.format("StartTLSTests"),
            "ProactorStartTLSTests": WINDOWS,
        },
        "tests": {
            "test_buf_feed_data": "private asyncio.protocols helper, no loop",
            "test_connection_lost_when_busy": "mocks the socket and SSLProtocol's private "
            "_sslobj/_outgoing, then calls the selector loop's private _make_socket_transport",
        },
    },
    "test_ssl": {
        "policy": ["TestSSL"],
        "tests": {
            "test_remote_shutdown_receives_trailing_data_on_slow_socket": "patches the "
            "socket transport's write() and swaps its private _sock, reading _read_ready_cb "
            "(asyncio's _SelectorSocketTransport delayed-write path, gh-115514)",
        },
    },
    "test_streams": {"policy": ["StreamTests"]},
    "test_subprocess": {
        "harness": {"SubprocessTests": ("setUp", "SubprocessMixin", "utils.TestCase")},
        "classes": {
            "SubprocessTransportTests": TESTLOOP,
            "SubprocessThreadedWatcherTests": WATCHER,
            "SubprocessMultiLoopWatcherTests": WATCHER,
            "SubprocessSafeWatcherTests": WATCHER,
            "SubprocessFastWatcherTests": WATCHER,
            "SubprocessPidfdWatcherTests": WATCHER,
            "SubprocessProactorTests": WINDOWS,
            "GenericWatcherTests": "asyncio's child-watcher protocol with a mock watcher",
            "MultiLoopChildWatcherTests": "asyncio's MultiLoopChildWatcher class",
        },
        "tests": {
            "test_pause_reading": "replaces loop.connect_read_pipe, assuming asyncio's "
            "base_subprocess uses it",
            "test_close_kill_running": "awaits the transport's private _wait()",
            "test_popen_error": "patches subprocess.Popen inside asyncio's implementation",
            "test_popen_error_with_stdin_pipe": "patches subprocess.Popen inside asyncio's "
            "implementation",
        },
    },
    "test_unix_events": {
        "harness": {"UnixSocketTests": ("setUp", "SelectorEventLoopUnixSocketTests")},
        "policy": ["TestFunctional", "TestFork"],
        "classes": {
            "SelectorEventLoopUnixSocketTests": TWIN.format("UnixSocketTests"),
            "SelectorEventLoopSignalTests": "SelectorEventLoop's signal bookkeeping with "
            "the signal module mocked",
            "SelectorEventLoopUnixSockSendfileTests": "the selector loop's private "
            "_sock_sendfile_native",
            "UnixReadPipeTransportTests": TESTLOOP,
            "UnixWritePipeTransportTests": TESTLOOP,
            "AbstractChildWatcherTests": "asyncio's child-watcher classes",
            "BaseChildWatcherTests": "asyncio's child-watcher classes",
            "SafeChildWatcherTests": "asyncio's child-watcher classes; " + TESTLOOP,
            "FastChildWatcherTests": "asyncio's child-watcher classes; " + TESTLOOP,
            "PolicyTests": "asyncio's policy classes, no loop",
            "PidfdChildWatcherTests": "asyncio's pidfd child watcher with os.waitpid mocked; "
            "calls the transport's private _process_exited",
        },
        "tests": {"test_create_unix_server_bind_error": "patches asyncio.unix_events.socket"},
    },
    "test_pep492": {
        # CPython's BaseTest.setUp builds a BaseEventLoop with a mocked selector.
        "harness": {
            "LockTests": ("setUp", "LockTests"),
            "StreamReaderTests": ("setUp", "StreamReaderTests"),
            "CoroutineTests": ("setUp", "CoroutineTests"),
        },
    },
    "test_runners": {
        "harness": {
            "RunTests": ("runner", "RunTests"),
            "RunnerTests": ("runner", "RunnerTests"),
        },
        "tests": {
            "test_loop_factory_default_event_loop": "asserts that asyncio.EventLoop makes an "
            "asyncio.SelectorEventLoop",
        },
    },
    "test_futures": {
        # Nearly all of these use TestLoop and show up as no-loop.
        "policy": [
            "CFutureTests",
            "PyFutureTests",
            "CSubFutureTests",
            "CFutureDoneCallbackTests",
            "PyFutureDoneCallbackTests",
            "CSubFutureDoneCallbackTests",
            "CFutureInheritanceTests",
            "PyFutureInheritanceTests",
            "DuckTests",
        ],
    },
    "test_futures2": {"policy": ["CFutureTests", "PyFutureTests", "FutureReprTests"]},
    "test_tasks": {
        # Most BaseTaskTests tests run on TestLoop and show up as no-loop.
        "policy": [
            "CTask_CFuture_Tests",
            "PyTask_PyFuture_Tests",
            "CTask_Future_Tests",
            "PyCurrentLoopTests",
            "CCurrentLoopTests",
            "RunCoroutineThreadsafeTests",
            "SleepTests",
            "CompatibilityTests",
            "WaitTests",
        ],
        "classes": {
            "CTask_CFuture_SubclassTests": TASK_MIX,
            "CTaskSubclass_PyFuture_Tests": TASK_MIX,
            "PyTask_CFutureSubclass_Tests": TASK_MIX,
            "CTask_PyFuture_Tests": TASK_MIX,
            "PyTask_CFuture_Tests": TASK_MIX,
            "PyTask_PyFuture_SubclassTests": TASK_MIX,
            "PyIntrospectionTests": "asyncio's task registry with mock loops",
            "CIntrospectionTests": "asyncio's task registry with mock loops",
            "GenericTaskTests": "module and class checks, no loop",
            "FutureGatherTests": TESTLOOP,
            "CoroutineGatherTests": TESTLOOP,
        },
    },
    "test_eager_task_factory": {
        "policy": [
            "PyEagerTaskFactoryLoopTests",
            "CEagerTaskFactoryLoopTests",
            "NonEagerTests",
            "EagerTests",
            "NonEagerPyTaskTests",
            "EagerPyTaskTests",
            "NonEagerCTaskTests",
            "EagerCTaskTests",
            "DefaultTaskFactoryEagerStart",
        ],
    },
    "test_locks": {
        "policy": ["LockTests", "EventTests", "ConditionTests", "SemaphoreTests", "BarrierTests"]
    },
    "test_queues": {
        "policy": [
            "QueueBasicTests",
            "QueueGetTests",
            "QueuePutTests",
            "LifoQueueTests",
            "PriorityQueueTests",
            "QueueJoinTests",
            "LifoQueueJoinTests",
            "PriorityQueueJoinTests",
            "QueueShutdownTests",
            "LifoQueueShutdownTests",
            "PriorityQueueShutdownTests",
        ],
        "classes": {"_QueueTestBase": "base class"},
    },
    "test_context": {"policy": ["DecimalContextTest"]},
    # 3.14+: both classes pass asyncio.EventLoop as their loop_factory (see install()).
    "test_taskgroups": {"policy": ["TestTaskGroup", "TestEagerTaskTaskGroup"]},
    "test_timeouts": {"policy": ["TimeoutTests"]},
    "test_waitfor": {"policy": ["AsyncioWaitForTest", "WaitForShieldTests"]},
    "test_threads": {"policy": ["ToThreadTests"]},
    "test_staggered": {"policy": ["StaggeredTests"]},
    # 3.14+: tasks, all_tasks and run_coroutine_threadsafe raced from threads (each
    # thread runs asyncio.Runner()); run on regular builds too.
    "test_free_threading": {
        "policy": [
            "TestPyFreeThreading",
            "TestCFreeThreading",
            "TestEagerPyFreeThreading",
            "TestEagerCFreeThreading",
        ]
    },
    # 3.14+: asyncio.capture_call_graph()/print_call_graph() of tasks, in
    # IsolatedAsyncioTestCase.
    "test_graph": {"policy": ["TestCallStackC", "TestCallStackPy"]},
    # 3.15+: contextvars seen by start_server's client callbacks, on asyncio.run with
    # loop_factory=asyncio.new_event_loop (plain and TLS).
    "test_server_context": {"policy": ["AsyncioEventLoopTests", "AsyncioEventLoopSSLTests"]},
}

EXCLUDED_MODULES = {
    "test_base_events": "asyncio.BaseEventLoop's implementation, mocked selectors/sockets",
    "test_selector_events": "asyncio's selector loop and transports, mocked",
    "test_proactor_events": "asyncio's proactor loop and transports, mocked",
    "test_protocols": "abstract protocol classes, no loop",
    "test_transports": "abstract transport classes, no loop",
    "test_windows_events": WINDOWS,
    "test_windows_utils": WINDOWS,
    "test_tools": "asyncio.tools (the `python -m asyncio ps/pstree` tables and trees) "
    "built from given data, no loop",
}

# Slow modules first, so that --jobs workers finish at about the same time.
SLOW_FIRST = ["test_events", "test_tasks", "test_streams", "test_subprocess", "test_sslproto"]

BAD = ("failed", "error", "timeout", "crash", "not-run")


def short_id(test_id: str) -> str:
    return test_id.removeprefix(PKG + ".")


def matches(test_id: str, patterns: list[str] | None) -> bool:
    if not patterns:
        return True
    for pat in patterns:
        glob = any(c in pat for c in "*?[")
        if (glob and fnmatch.fnmatchcase(test_id, pat)) or (not glob and pat in test_id):
            return True
    return False


def clip(text: str, limit: int = DETAIL_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def load_factory(spec: str):
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"--loop must look like MODULE:FACTORY, not {spec!r}")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


# ---------------------------------------------------------------------------
# asyncio's event-loop policy, reached without its deprecated public names.
# Policies are deprecated in 3.14 (removed in 3.16): there get/set_event_loop_policy
# and asyncio.DefaultEventLoopPolicy warn, and asyncio itself (its own tests too)
# uses the private events._get/_set_event_loop_policy and creates its default policy
# from unix_events._DefaultEventLoopPolicy. Before 3.14 only the public names exist,
# and the default policy is created from asyncio.DefaultEventLoopPolicy.
# ---------------------------------------------------------------------------


def _policy_module():
    """The module whose attribute asyncio reads when it creates its default policy,
    and that attribute's name."""
    import asyncio

    unix_events = getattr(asyncio, "unix_events", None)
    if unix_events is not None and hasattr(unix_events, "_DefaultEventLoopPolicy"):
        return unix_events, "_DefaultEventLoopPolicy"  # 3.14+
    return asyncio, "DefaultEventLoopPolicy"


def default_policy_class() -> type:
    module, name = _policy_module()
    return getattr(module, name)


def set_default_policy_class(cls: type) -> None:
    module, name = _policy_module()
    setattr(module, name, cls)


def get_policy():
    import asyncio

    getter = getattr(asyncio.events, "_get_event_loop_policy", None)
    return getter() if getter else asyncio.get_event_loop_policy()


def set_policy(policy) -> None:
    import asyncio

    setter = getattr(asyncio.events, "_set_event_loop_policy", None)
    if setter:
        setter(policy)
    else:
        asyncio.set_event_loop_policy(policy)


# ===========================================================================
# Worker: one test module, in its own process, reporting JSON lines on a pipe.
# ===========================================================================


class Harness:
    """The loop factory as the tests see it, with a count of loops it made."""

    def __init__(self, spec: str):
        import asyncio

        factory = load_factory(spec)
        self.asyncio_policy = default_policy_class()
        if factory is asyncio.new_event_loop:
            # asyncio.new_event_loop would ask our own policy: use what
            # asyncio's default policy creates instead.
            def factory():
                return self.asyncio_policy().new_event_loop()

        self.factory = factory
        self.loops = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def in_factory(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def new_loop(self):
        with self._lock:
            self.loops += 1
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            return self.factory()
        finally:
            self._local.depth -= 1

    def install(self) -> None:
        import asyncio

        from test.test_asyncio import utils as test_utils

        harness = self

        class FactoryPolicy(self.asyncio_policy):
            def new_event_loop(self):
                if harness.in_factory():  # the factory itself asked asyncio
                    return super().new_event_loop()
                return harness.new_loop()

        # Resetting the policy to None makes asyncio create an instance of its
        # default policy class: from now on that is FactoryPolicy.
        set_default_policy_class(FactoryPolicy)
        set_policy(None)

        # 3.13+: asyncio.EventLoop is the default loop's class, and from 3.14 on, with
        # policies deprecated, tests name it where they mean "asyncio's default loop":
        # asyncio.run(..., loop_factory=asyncio.EventLoop), IsolatedAsyncioTestCase's
        # loop_factory = asyncio.EventLoop. Calling it makes a loop through the factory.
        # The test modules are imported after this, so class attributes see it too.
        if hasattr(asyncio, "EventLoop"):

            class EventLoop:
                def __new__(cls):
                    return harness.new_loop()

            asyncio.EventLoop = EventLoop

        # utils.TestCase.close_loop reads BaseEventLoop's private
        # _default_executor; give other loops the public path instead.
        original_close_loop = test_utils.TestCase.close_loop

        class ClosedExecutorView:
            _default_executor = None

            def __init__(self, loop):
                self.close = loop.close

        def close_loop(loop):
            if not hasattr(loop, "_default_executor"):
                if not loop.is_closed():
                    loop.run_until_complete(loop.shutdown_default_executor())
                loop = ClosedExecutorView(loop)
            original_close_loop(loop)

        test_utils.TestCase.close_loop = staticmethod(close_loop)

    def hook_namespace(self, hook: str) -> dict:
        from test.test_asyncio import utils as test_utils

        harness = self

        def new_loop(self):
            return harness.new_loop()

        def setUp(self):
            test_utils.TestCase.setUp(self)
            self.loop = harness.new_loop()
            self.set_event_loop(self.loop)

        def setUp_loop(self):
            unittest.TestCase.setUp(self)
            self.loop = harness.new_loop()
            self.addCleanup(self.loop.close)

        def runner_tearDown(self):
            # CPython also asserts a flag its mocked loop sets in
            # shutdown_asyncgens; with a real loop only "closed" is checked.
            policy = get_policy()
            if getattr(policy, "loop", None) is not None:
                self.assertTrue(policy.loop.is_closed())
            set_policy(None)

        if hook == "create_event_loop":
            return {"create_event_loop": new_loop}
        if hook == "new_loop":
            return {"new_loop": new_loop}
        if hook == "setUp":
            return {"setUp": setUp}
        if hook == "setUp_loop":
            return {"setUp": setUp_loop}
        if hook == "runner":
            return {"new_loop": new_loop, "tearDown": runner_tearDown}
        raise ValueError(f"unknown hook {hook}")


def case_classes(module) -> dict[str, type]:
    loader = unittest.TestLoader()
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, unittest.TestCase)
        and obj.__module__ == module.__name__
        and loader.getTestCaseNames(obj)
    }


def build_module(name: str, harness: Harness):
    """Return ([TestCase instances to run], [(test id, reason excluded)])."""
    module = importlib.import_module(f"{PKG}.{name}")
    loader = unittest.TestLoader()
    spec = MODULES.get(name)
    found = case_classes(module)
    excluded = []

    def exclude(cls_name, reason):
        for meth in loader.getTestCaseNames(found[cls_name]):
            excluded.append((f"{name}.{cls_name}.{meth}", reason))

    if spec is None:
        reason = EXCLUDED_MODULES.get(name, "module not reviewed for this Python version")
        for cls_name in sorted(found):
            exclude(cls_name, reason)
        return [], excluded

    harness_specs = spec.get("harness", {})
    policy = spec.get("policy", [])
    bases_used = {b for _, *bases in harness_specs.values() for b in bases}
    for cls_name in sorted(found):
        if cls_name in policy or cls_name in harness_specs:
            continue
        if cls_name in spec.get("classes", {}):
            exclude(cls_name, spec["classes"][cls_name])
        elif cls_name in bases_used:
            exclude(cls_name, "run through a harness class")
        else:
            exclude(cls_name, "class not reviewed for this Python version")

    classes = [(cls_name, found[cls_name]) for cls_name in policy if cls_name in found]
    for cls_name, (hook, *base_names) in harness_specs.items():
        bases = []
        for base in base_names:
            helper, _, attr = base.rpartition(".")
            owner = importlib.import_module(f"{PKG}.{helper}") if helper else module
            bases.append(getattr(owner, attr, None))
        if None in bases:
            continue  # not in this Python version (e.g. RunnerTests before 3.11)
        cls = type(cls_name, tuple(bases), harness.hook_namespace(hook))
        cls.__module__ = module.__name__
        cls.__qualname__ = cls_name
        classes.append((cls_name, cls))

    tests = []
    skip_tests = spec.get("tests", {})
    for cls_name, cls in classes:
        for meth in loader.getTestCaseNames(cls):
            if meth in skip_tests:
                excluded.append((f"{name}.{cls_name}.{meth}", skip_tests[meth]))
            else:
                tests.append(cls(meth))
    return tests, excluded


class ReportingResult(unittest.TestResult):
    """Sends one "start" and one "end" event per test over the result pipe."""

    def __init__(self, emit, harness: Harness, timeout: float):
        super().__init__()
        self.emit = emit
        self.harness = harness
        self.timeout = timeout
        self.cur: dict | None = None
        self.started: set[str] = set()
        self.fixture_errors: dict[str, tuple[str, str]] = {}
        self.loops_mark = harness.loops

    def startTest(self, test):
        import faulthandler

        super().startTest(test)
        tid = short_id(test.id())
        self.started.add(tid)
        self.cur = {"id": tid, "errors": [], "failures": [], "skip": None, "ok": False}
        self.cur["t0"] = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        self.emit(ev="start", id=tid)
        # Dumps every thread's stack into the log and exits on a hang.
        faulthandler.dump_traceback_later(self.timeout, exit=True)

    def _fixture(self, test, outcome, detail):
        # setUpClass/setUpModule (and tearDown*) problems arrive on an
        # _ErrorHolder whose id is "setUpClass (test.test_asyncio.x.Cls)".
        m = re.match(r"(\w+) \((.*)\)$", test.id())
        key = short_id(m.group(2)) if m else short_id(test.id())
        self.fixture_errors[key] = (outcome, f"{test.id()}: {detail}")
        if m and m.group(1).startswith("tearDown"):
            self.emit(ev="fixture", id=f"{key}.<{m.group(1)}>", outcome=outcome, detail=detail)

    def addSuccess(self, test):
        self.cur["ok"] = True

    def addError(self, test, err):
        if not isinstance(test, unittest.TestCase):
            return self._fixture(test, "error", self._exc_info_to_string(err, test))
        self.cur["errors"].append(self._exc_info_to_string(err, test))

    def addFailure(self, test, err):
        if not isinstance(test, unittest.TestCase):
            return self._fixture(test, "failed", self._exc_info_to_string(err, test))
        self.cur["failures"].append(self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        if not isinstance(test, unittest.TestCase) or self.cur is None:
            return self._fixture(test, "skipped", reason)
        self.cur["skip"] = self.cur["skip"] or reason

    def addExpectedFailure(self, test, err):
        self.cur["ok"] = True

    def addUnexpectedSuccess(self, test):
        self.cur["failures"].append("unexpected success (test is marked expectedFailure)")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = "failures" if issubclass(err[0], test.failureException) else "errors"
            self.cur[kind].append(f"{subtest}\n{self._exc_info_to_string(err, test)}")

    def stopTest(self, test):
        import faulthandler

        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        cur, self.cur = self.cur, None
        if cur["errors"]:
            outcome, detail = "error", "\n".join(cur["errors"] + cur["failures"])
        elif cur["failures"]:
            outcome, detail = "failed", "\n".join(cur["failures"])
        elif cur["skip"] is not None:
            outcome, detail = "skipped", cur["skip"]
        elif cur["ok"]:
            outcome, detail = "passed", ""
        else:
            outcome, detail = "error", "no result: an exception escaped unittest"
        # Loops made since the previous test ended: on 3.10,
        # IsolatedAsyncioTestCase makes its loop before startTest.
        loops, self.loops_mark = self.harness.loops - self.loops_mark, self.harness.loops
        record = {"outcome": outcome, "detail": clip(detail), "loops": loops}
        if loops == 0 and outcome != "skipped":
            record.update(outcome="no-loop", raw_outcome=outcome)
        record["duration_s"] = round(time.monotonic() - cur["t0"], 3)
        sys.stdout.flush()
        sys.stderr.flush()
        self.emit(ev="end", id=cur["id"], **record)
        self.reset_asyncio()

    @staticmethod
    def reset_asyncio():
        """A fresh factory policy (no current loop, no child watcher) and no
        running loop, so a test that breaks process-wide state fails alone."""
        import asyncio

        set_policy(None)
        asyncio.events._set_running_loop(None)


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def worker_main(args) -> int:
    import faulthandler

    faulthandler.enable()
    # A background job of a non-interactive shell starts with SIGINT ignored;
    # tests of asyncio.run()/Runner need Python's default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = os.fdopen(args.result_fd, "w", buffering=1, encoding="utf-8")
    os.set_inheritable(args.result_fd, False)  # keep it out of the tests' subprocesses

    def emit(**event):
        out.write(json.dumps(event) + "\n")
        out.flush()

    skip = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}
    try:
        harness = Harness(args.loop)
        harness.install()
        tests, excluded = build_module(args.module, harness)
    except unittest.SkipTest as exc:
        emit(ev="module-skip", reason=str(exc))
        emit(ev="done", fds=0)
        os._exit(0)
    except BaseException:
        emit(ev="fatal", detail=clip(traceback.format_exc()))
        os._exit(3)

    tests = [t for t in tests if matches(short_id(t.id()), args.only)]
    emit(ev="plan", ids=[short_id(t.id()) for t in tests])
    for tid, reason in excluded:
        if matches(tid, args.only):
            emit(ev="excluded", id=tid, reason=reason)
    tests = [t for t in tests if short_id(t.id()) not in skip]

    result = ReportingResult(emit, harness, args.timeout_per_test)

    def unraisable(info):
        where = result.cur["id"] if result.cur else None
        text = f"{getattr(info.exc_type, '__name__', info.exc_type)}: {info.exc_value}"
        emit(ev="unraisable", id=where, text=clip(f"{info.err_msg or ''} {text}", 300))
        sys.__unraisablehook__(info)

    sys.unraisablehook = unraisable
    fds_before = open_fds()
    result.reset_asyncio()
    try:
        unittest.TestSuite(tests).run(result)
    except BaseException:
        emit(ev="fatal", detail=clip(traceback.format_exc()))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)

    # Tests unittest never started: their class or module fixture failed.
    for t in tests:
        tid = short_id(t.id())
        if tid in result.started:
            continue
        cls_key = tid.rsplit(".", 1)[0]
        problem = result.fixture_errors.get(cls_key) or result.fixture_errors.get(
            cls_key.split(".")[0]
        )
        outcome, detail = problem or ("not-run", "never started by unittest")
        emit(ev="end", id=tid, outcome=outcome, detail=clip(detail), loops=0, duration_s=0.0)
    gc.collect()
    emit(ev="done", fds=open_fds() - fds_before)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # leftover loop threads must not turn a finished module into a hang


def preflight_main(args) -> int:
    info: dict = {"ok": False}
    try:
        import asyncio

        factory = load_factory(args.loop)
        if factory is asyncio.new_event_loop:
            factory = default_policy_class()().new_event_loop
        loop = factory()
        info["loop_type"] = f"{type(loop).__module__}.{type(loop).__qualname__}"

        async def probe():
            await asyncio.sleep(0)
            return 42

        try:
            info["ok"] = loop.run_until_complete(probe()) == 42
        finally:
            loop.close()
    except BaseException:
        info["error"] = clip(traceback.format_exc())
    print(json.dumps(info))
    return 0


# ===========================================================================
# Parent: workers, watchdog, comparison with the expected failures, report.
# ===========================================================================


class ModuleRun:
    def __init__(self, name: str):
        self.name = name
        self.plan: list[str] = []
        self.results: dict[str, dict] = {}
        self.excluded: dict[str, str] = {}
        self.unraisable: list[dict] = []
        self.fd_delta = 0
        self.restarts = 0
        self.note = ""
        self.duration = 0.0


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return clip(f.read().decode("utf-8", "replace"))
    except OSError:
        return ""


def run_module(name: str, args, scratch: str) -> ModuleRun:
    """Run one module, restarting its worker after each hang or crash."""
    mr = ModuleRun(name)
    t_start = time.monotonic()
    workdir = os.path.join(scratch, name)
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(scratch, f"{name}.log")
    skip_path = os.path.join(scratch, f"{name}.skip")
    limit = args.timeout_per_test + 5.0  # faulthandler exits the worker first
    while True:
        with open(skip_path, "w", encoding="utf-8") as f:
            f.write("".join(tid + "\n" for tid in mr.results))
        rfd, wfd = os.pipe()
        cmd = [sys.executable, SCRIPT, "--worker", name, "--loop", args.loop]
        cmd += ["--result-fd", str(wfd), "--skip-file", skip_path]
        cmd += ["--timeout-per-test", str(args.timeout_per_test)]
        for pat in args.only or ():
            cmd += ["--only", pat]
        with open(log_path, "ab") as log:
            log_offset = log.tell()
            proc = subprocess.Popen(
                cmd,
                pass_fds=(wfd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )
        os.close(wfd)
        current, current_t0, last_done, done, fatal = None, 0.0, None, False, ""
        buf, last_event, hung = b"", time.monotonic(), False
        try:
            while True:
                ready, _, _ = select.select([rfd], [], [], 0.25)
                chunk = os.read(rfd, 65536) if ready else b""
                if ready and not chunk:
                    break  # EOF: the worker exited
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue  # e.g. a forked child scribbling on the pipe
                    last_event = time.monotonic()
                    kind = ev.pop("ev", None)
                    if kind == "plan":
                        mr.plan += [t for t in ev["ids"] if t not in mr.plan]
                    elif kind == "excluded":
                        mr.excluded[ev["id"]] = ev["reason"]
                    elif kind == "start":
                        current, current_t0 = ev["id"], time.monotonic()
                    elif kind == "end":
                        last_done, current = ev.pop("id"), None
                        mr.results[last_done] = ev
                    elif kind == "fixture":
                        mr.results[ev.pop("id")] = ev
                    elif kind == "unraisable":
                        mr.unraisable.append(ev)
                    elif kind == "module-skip":
                        mr.note = "skipped at import: " + ev["reason"]
                    elif kind == "fatal":
                        fatal = ev["detail"]
                    elif kind == "done":
                        mr.fd_delta += ev.get("fds", 0)
                        done = True
                if time.monotonic() - last_event > limit:
                    # Hung outside the faulthandler timer: SIGABRT makes
                    # faulthandler dump the stacks into the log first.
                    hung = True
                    os.kill(proc.pid, signal.SIGABRT)
                    try:
                        proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        pass
                    break
                if not ready and proc.poll() is not None:
                    break  # exited; a grandchild may still hold the pipe open
        finally:
            kill_group(proc)
            proc.wait()
            os.close(rfd)
        if done:
            break
        how = "hung" if hung else f"exit status {proc.returncode}"
        tail = fatal or log_tail(log_path, log_offset)
        pending = [t for t in mr.plan if t not in mr.results]
        if current:
            elapsed = time.monotonic() - current_t0
            timed_out = hung or elapsed >= args.timeout_per_test - 0.5
            outcome = "timeout" if timed_out else "crash"
            what = f"no result after {elapsed:.0f}s" if timed_out else f"worker died ({how})"
            culprit, detail = current, f"{what}; worker restarted after this test\n{tail}"
        elif last_done:
            culprit, outcome = last_done, "timeout" if hung else "crash"
            raw = mr.results[last_done]["outcome"]
            detail = f"worker died ({how}) after this test reported {raw}\n{tail}"
        elif pending:
            culprit, outcome = pending[0], "timeout" if hung else "crash"
            detail = f"worker died ({how}) before this test started\n{tail}"
        else:
            mr.results[f"{name}.<module>"] = {"outcome": "crash", "detail": clip(tail)}
            break
        mr.results[culprit] = {"outcome": outcome, "detail": clip(detail), "loops": None}
        mr.restarts += 1
        if all(t in mr.results for t in mr.plan) or mr.restarts > len(mr.plan) + 2:
            break
    for tid in mr.plan:
        if tid not in mr.results:
            mr.results[tid] = {"outcome": "not-run", "detail": "worker kept dying", "loops": None}
    mr.duration = time.monotonic() - t_start
    return mr


def read_expected(path: str) -> dict[str, str]:
    """{test id: reason} from lines "test_id  # reason"."""
    expected = {}
    if not os.path.exists(path):
        return expected
    with open(path, encoding="utf-8") as f:
        for line in f:
            tid, _, reason = line.partition("#")
            if tid.strip():
                expected[tid.strip()] = reason.strip()
    return expected


def status_of(outcome: str, reason: str | None) -> str:
    """How a test's outcome compares with the expected-failures list."""
    if outcome in ("no-loop", "skipped"):
        return outcome
    flaky = reason is not None and reason.startswith("flaky:")
    if outcome in BAD:
        return "new-failure" if reason is None else "expected-failure"
    if reason is not None and not flaky:
        return "unexpected-pass"
    return "passed"


# Loop methods that ferroloop does not implement yet, by tracking issue.
PENDING_METHODS = {
    "sockets/transports: issue 3": (
        "sock_recv sock_recv_into sock_recvfrom sock_recvfrom_into sock_sendall sock_sendto "
        "sock_connect sock_accept sock_sendfile create_connection create_server "
        "create_unix_connection create_unix_server connect_accepted_socket sendfile"
    ).split(),
    "datagrams/pipes/subprocess: issue 4": (
        "create_datagram_endpoint connect_read_pipe connect_write_pipe subprocess_exec "
        "subprocess_shell"
    ).split(),
    "TLS: issue 5": ["start_tls"],
}


def guess_reason(tid: str, rec: dict) -> str:
    """The issue behind a NotImplementedError from a loop method, else TODO."""
    frames = re.findall(r'File "[^"]*", line \d+, in (\w+)', rec.get("detail", ""))
    if "NotImplementedError" not in rec.get("detail", "") or not frames:
        return "TODO reason"
    for reason, methods in PENDING_METHODS.items():
        if frames[-1] in methods:
            if reason.endswith("3") and re.search(r"ssl|tls", tid, re.IGNORECASE):
                return f"TLS: issue 5 ({frames[-1]})"
            return f"{reason} ({frames[-1]})"
    return f"TODO reason (NotImplementedError in {frames[-1]})"


def write_expected(path: str, old: dict[str, str], tests: dict[str, dict]) -> None:
    entries = {}
    for tid, reason in old.items():
        rec = tests.get(tid)
        if rec is None or rec["outcome"] in ("no-loop", "skipped", "excluded"):
            entries[tid] = reason  # not run here (other Python, --only, ...)
        elif rec["outcome"] in BAD or reason.startswith("flaky:"):
            entries[tid] = reason
    for tid, rec in tests.items():
        if rec["outcome"] in BAD and tid not in entries:
            entries[tid] = guess_reason(tid, rec)
    width = max((len(t) for t in entries), default=0)
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "# Tests of CPython's test_asyncio that fail on ferroloop today.\n"
            "# One per line: test_id  # reason. A reason starting with 'flaky:' accepts\n"
            "# both outcomes. Regenerate with run_asyncio_suite.py --write-expected.\n\n"
        )
        for tid in sorted(entries):
            f.write(f"{tid.ljust(width)}  # {entries[tid] or 'TODO reason'}\n")


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Cancelled\w*)\b")


def one_line(rec: dict) -> str:
    lines = [ln.strip() for ln in rec.get("detail", "").splitlines() if ln.strip()]
    if not lines:
        return rec["outcome"]
    if rec["outcome"] in ("timeout", "crash", "not-run"):
        return lines[0]
    for ln in reversed(lines):
        if _EXC_LINE.match(ln):
            return ln
    return lines[-1]


def module_order() -> list[str]:
    import importlib.util

    folder = importlib.util.find_spec(PKG).submodule_search_locations[0]
    names = sorted(f[:-3] for f in os.listdir(folder) if re.match(r"test_\w+\.py$", f))
    return [n for n in SLOW_FIRST if n in names] + [n for n in names if n not in SLOW_FIRST]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        out.append("  ".join(cells))
        if r is rows[0] or r is rows[-2]:
            out.append("-" * len(out[-1]))
    return "\n".join(out)


# More new failures than this are not retried one by one: that is a broken build, not a
# flaky test.
MAX_RETRIED = 5


def passes_alone(args, tid: str) -> bool:
    """Runs test `tid` once more, alone, in a fresh runner; True if it passes there."""
    with tempfile.TemporaryDirectory(prefix="ferroloop-retry-") as tmp:
        out = os.path.join(tmp, "retry.json")
        cmd = [sys.executable, SCRIPT, "--loop", args.loop, "--expected", args.expected]
        cmd += ["--only", tid, "--jobs", "1", "--retries", "0", "--json", out]
        cmd += ["--timeout-per-test", str(args.timeout_per_test)]
        try:
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=args.timeout_per_test * 3 + 60,
            )
            with open(out, encoding="utf-8") as f:
                rec = json.load(f)["tests"].get(tid, {})
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False
        return rec.get("status") == "passed"


def parent_main(args) -> int:
    t0 = time.monotonic()
    try:
        pre = subprocess.run(
            [sys.executable, SCRIPT, "--preflight", "--loop", args.loop],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        info = json.loads((pre.stdout.strip().splitlines() or ["{}"])[-1])
    except (subprocess.TimeoutExpired, ValueError) as exc:
        info = {"error": repr(exc)}
    if not info.get("ok"):
        print(f"error: {args.loop} does not give a working loop:", file=sys.stderr)
        print(info.get("error") or pre.stderr, file=sys.stderr, flush=True)
        print("conformance: 0 passed, 1 failed, 0 skipped")
        return 2
    print(
        f"loop {args.loop} -> {info['loop_type']}; Python {platform.python_version()}; "
        f"{args.jobs} job(s); {args.timeout_per_test:g}s per test",
        flush=True,
    )
    expected = read_expected(args.expected)

    queue = module_order()
    runs: dict[str, ModuleRun] = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="ferroloop-conf-", ignore_cleanup_errors=True) as tmp:

        def job():
            while True:
                with lock:
                    if not queue:
                        return
                    name = queue.pop(0)
                mr = run_module(name, args, tmp)
                counts = {}
                for rec in mr.results.values():
                    counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
                text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                with lock:
                    runs[name] = mr
                    extra = f", {mr.restarts} restart(s)" if mr.restarts else ""
                    if text:
                        print(f"  {name}: {text} ({mr.duration:.1f}s{extra})", flush=True)

        threads = [threading.Thread(target=job) for _ in range(max(1, args.jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    tests: dict[str, dict] = {}
    head = ["module", "passed", "xfail", "new-fail", "xpass", "skipped", "no-loop", "excl", "time"]
    rows, total = [head], dict.fromkeys(head[1:-1], 0)
    keys = {
        "passed": "passed",
        "expected-failure": "xfail",
        "new-failure": "new-fail",
        "unexpected-pass": "xpass",
        "skipped": "skipped",
        "no-loop": "no-loop",
    }
    for name in sorted(runs):
        mr = runs[name]
        row = dict.fromkeys(head[1:-1], 0)
        row["excl"] = len(mr.excluded)
        for tid in mr.plan + [t for t in mr.results if t not in mr.plan]:
            if tid not in mr.results:
                continue
            rec = dict(mr.results[tid])
            rec["status"] = status_of(rec["outcome"], expected.get(tid))
            if tid in expected:
                rec["expected_reason"] = expected[tid]
            row[keys[rec["status"]]] += 1
            tests[tid] = rec
        for tid, reason in mr.excluded.items():
            tests.setdefault(tid, {"outcome": "excluded", "status": "excluded", "detail": reason})
        for k in row:
            total[k] += row[k]
        if any(row.values()):
            rows.append([name] + [str(row[k]) for k in head[1:-1]] + [f"{mr.duration:.1f}s"])
    duration = time.monotonic() - t0
    rows.append(["TOTAL"] + [str(total[k]) for k in head[1:-1]] + [f"{duration:.1f}s"])

    print()
    print(format_table(rows))
    for name in sorted(runs):
        mr = runs[name]
        if mr.note:
            print(f"note: {name}: {mr.note}")
        if mr.unraisable:
            culprits = sorted({u["id"] or "(between tests)" for u in mr.unraisable})
            print(
                f"warning: {name}: {len(mr.unraisable)} unraisable exception(s) in "
                + ", ".join(culprits[:5])
                + (" ..." if len(culprits) > 5 else "")
            )
        if mr.fd_delta > 0:
            print(f"warning: {name}: {mr.fd_delta} more open fd(s) after the tests than before")
        unreviewed = sorted(
            {t.rsplit(".", 1)[0] for t, why in mr.excluded.items() if "not reviewed" in why}
        )
        if unreviewed:
            print(f"warning: not reviewed for this Python, excluded: {', '.join(unreviewed)}")

    new = [t for t, r in tests.items() if r["status"] == "new-failure"]
    xpass = [t for t, r in tests.items() if r["status"] == "unexpected-pass"]
    for tid in list(new) if args.retries > 0 and len(new) <= MAX_RETRIED else []:
        if passes_alone(args, tid):
            print(f"FLAKY (passed when run again alone): {tid}: {one_line(tests[tid])[:200]}")
            tests[tid]["status"] = "flaky"
            tests[tid]["first_outcome"] = tests[tid]["outcome"]
            tests[tid]["outcome"] = "passed"
            total["new-fail"] -= 1
            total["passed"] += 1
            new.remove(tid)
    for tid in new:
        print(f"NEW FAILURE {tests[tid]['outcome']}: {tid}: {one_line(tests[tid])[:200]}")
    for tid in xpass:
        print(f"UNEXPECTED PASS (remove it from the list): {tid}")

    if args.json:
        doc = {
            "loop": args.loop,
            "loop_type": info["loop_type"],
            "python": platform.python_version(),
            "duration_s": round(duration, 1),
            "timeout_per_test_s": args.timeout_per_test,
            "only": args.only or [],
            "totals": total,
            "modules": {
                name: {
                    "duration_s": round(mr.duration, 1),
                    "restarts": mr.restarts,
                    "unraisable": mr.unraisable,
                    "fd_delta": mr.fd_delta,
                    "note": mr.note,
                }
                for name, mr in sorted(runs.items())
            },
            "tests": tests,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
    if args.write_expected:
        write_expected(args.expected, expected, tests)
        print(f"wrote {args.expected}")

    print(f"expected failures still failing: {total['xfail']}")
    print(
        f"conformance: {total['passed']} passed, {len(new) + len(xpass)} failed, "
        f"{total['skipped']} skipped"
    )
    return 1 if new or xpass else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--loop",
        default="ferroloop:new_event_loop",
        metavar="MODULE:FACTORY",
        help="zero-argument callable returning a new loop (default %(default)s; "
        "asyncio:new_event_loop means asyncio's own loop)",
    )
    ap.add_argument(
        "--expected",
        default=DEFAULT_EXPECTED,
        metavar="FILE",
        help="expected-failures list (default: expected_failures.txt beside this script)",
    )
    ap.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="keep test ids containing PATTERN (a glob if it has * ? [); repeatable",
    )
    ap.add_argument("--json", metavar="OUT", help="write every test's outcome here")
    ap.add_argument(
        "--write-expected",
        action="store_true",
        help="rewrite the expected-failures file from this run",
    )
    ap.add_argument("--jobs", type=int, default=2, metavar="N", help="modules run at once")
    ap.add_argument(
        "--retries",
        type=int,
        default=1,
        choices=[0, 1],
        help="run each new failure once more alone; a pass then is reported as FLAKY (default 1)",
    )
    ap.add_argument(
        "--timeout-per-test", type=float, default=20.0, metavar="S", help="default 20 s"
    )
    ap.add_argument("--worker", metavar="MODULE", help=argparse.SUPPRESS)
    ap.add_argument("--result-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--skip-file", help=argparse.SUPPRESS)
    ap.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.module = args.worker
        return worker_main(args)
    if args.preflight:
        return preflight_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())

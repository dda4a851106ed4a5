"""Starting and stopping the loop: run_forever, run_until_complete, close, async generators."""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from asyncio import events, futures, tasks

# asyncio's DEBUG_STACK_DEPTH: frames recorded per coroutine in debug mode.
_COROUTINE_ORIGIN_DEPTH = 10


def _stop_loop_of(future):
    """Done-callback of run_until_complete's future: stop its loop.

    A future that ended with KeyboardInterrupt or SystemExit already ended run_forever
    (the exception propagated out of it); stopping now would leave a stale stop request
    that ends the loop's next run early.
    """
    if not future.cancelled() and isinstance(future.exception(), (KeyboardInterrupt, SystemExit)):
        return
    future.get_loop().stop()


class RunningMixin:
    """The Python half of running: registration as the running loop, asyncgen hooks."""

    _thread_id = None
    _asyncgens_shutdown_called = False
    _coroutine_origin_tracking = False
    _coroutine_origin_saved_depth = None

    def _init_running(self):
        self._asyncgens = weakref.WeakSet()

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self):
        """Runs until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        saved_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*saved_hooks)

    def run_until_complete(self, future):
        """Runs until `future` (a future, task or coroutine) is done; returns its result."""
        self._check_closed()
        self._check_running()
        wrapped = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if wrapped:
            # The task is ours: an exception it ends with is raised here, so it must not
            # also be logged as "never retrieved".
            future._log_destroy_pending = False
        future.add_done_callback(_stop_loop_of)
        try:
            self.run_forever()
        except BaseException:
            if wrapped and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_loop_of)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def set_debug(self, enabled):
        """Turns debug mode on or off."""
        # get_debug() returns what was given, as asyncio's does (set_debug(None) -> None).
        self._set_debug_flag(bool(enabled), enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, bool(enabled))

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == self._coroutine_origin_tracking:
            return
        if enabled:
            self._coroutine_origin_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_COROUTINE_ORIGIN_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_saved_depth)
        self._coroutine_origin_tracking = bool(enabled)

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Closes every async generator still open on this loop."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        open_agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(
            *(agen.aclose() for agen in open_agens), return_exceptions=True
        )
        for agen, result in zip(open_agens, results, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

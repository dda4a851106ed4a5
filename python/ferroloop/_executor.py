"""Running blocking functions in threads: run_in_executor and the default executor."""

from __future__ import annotations

import concurrent.futures
import threading
import warnings
from asyncio import futures, tasks


class ExecutorMixin:
    """The loop's default ThreadPoolExecutor and its shutdown."""

    _default_executor = None
    _executor_shutdown_called = False

    def run_in_executor(self, executor, func, *args):
        """Runs `func(*args)` in `executor` (None: the default one); returns a Future."""
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        """Sets the executor run_in_executor(None, ...) uses."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Shuts the default executor down, waiting up to `timeout` seconds for its threads."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()
        joiner = threading.Thread(target=self._join_executor, args=(executor, done))
        joiner.start()
        finished, _ = await tasks.wait({done}, timeout=timeout)
        if finished:
            joiner.join()
            return
        warnings.warn(
            f"The executor did not finishing joining its threads within {timeout} seconds.",
            RuntimeWarning,
            stacklevel=2,
        )
        executor.shutdown(wait=False)

    def _join_executor(self, executor, done):
        try:
            executor.shutdown(wait=True)
        except Exception as exc:
            if not self.is_closed():
                self.call_soon_threadsafe(_fail_unless_done, done, exc)
        else:
            if not self.is_closed():
                self.call_soon_threadsafe(_finish_unless_done, done)

    def _shutdown_executor_nowait(self):
        self._executor_shutdown_called = True
        executor, self._default_executor = self._default_executor, None
        if executor is not None:
            executor.shutdown(wait=False)


def _finish_unless_done(future):
    if not future.done():
        future.set_result(None)


def _fail_unless_done(future, exc):
    if not future.done():
        future.set_exception(exc)

"""Exception handlers and debug-mode diagnostics of the loop (asyncio's contract)."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from asyncio import coroutines, format_helpers

from ._describe import describe_callback, format_handle

logger = logging.getLogger("asyncio")

# Python 3.12 made call_exception_handler run a custom handler in the context of the
# task, future or handle the error is about.
_HANDLER_RUNS_IN_CONTEXT = sys.version_info >= (3, 12)


# asyncio.iscoroutinefunction is deprecated from 3.14, where asyncio itself calls the
# private twin (which also knows asyncio's `_is_coroutine` marker).
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", None) or (
    coroutines.iscoroutinefunction
)


def is_coroutine_or_function(callback) -> bool:
    """asyncio's test for callbacks that are coroutines rather than plain callables."""
    return coroutines.iscoroutine(callback) or _iscoroutinefunction(callback)


class ErrorsMixin:
    """`set_exception_handler` and friends, plus the hooks the Rust run loop calls."""

    _exception_handler = None

    def get_exception_handler(self):
        """The custom exception handler, or None for the default one."""
        return self._exception_handler

    def set_exception_handler(self, handler):
        """Sets `handler(loop, context)` as the exception handler (None: the default)."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Logs `context` on the 'asyncio' logger at ERROR level, as asyncio does."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception else False
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                stack = "".join(traceback.format_list(value)).rstrip()
                value = f"Object created at (most recent call last):\n{stack}"
            elif key == "handle_traceback":
                stack = "".join(traceback.format_list(value)).rstrip()
                value = f"Handle created at (most recent call last):\n{stack}"
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Reports `context` to the custom handler, falling back to the default one."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._run_custom_handler(context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )

    def _run_custom_handler(self, context):
        handler = self._exception_handler
        if _HANDLER_RUNS_IN_CONTEXT:
            owner = context.get("task") or context.get("future") or context.get("handle")
            get_context = getattr(owner, "get_context", None)
            ctx = get_context() if get_context is not None else None
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(handler, self, context)
                return
        handler(self, context)

    # Hooks called from the Rust run loop and scheduling methods.

    def _report_callback_error(self, handle, exc):
        context = {
            "message": f"Exception in callback {describe_callback(handle._callback, handle._args)}"
            if handle._callback is not None
            else f"Exception in callback {handle!r}",
            "exception": exc,
            "handle": handle,
        }
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    def _log_slow_callback(self, handle, seconds):
        # asyncio's words and its handle formatting (base_events._run_once).
        logger.warning("Executing %s took %.3f seconds", format_handle(handle), seconds)

    def _capture_source_traceback(self, handle):
        # Frame 0 is this method, frame 1 the caller of call_soon/call_at (Rust adds none).
        handle._source_traceback = format_helpers.extract_stack(sys._getframe(1))

    def _check_thread(self):
        thread_id = self._thread_id
        if thread_id is not None and thread_id != threading.get_ident():
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def _check_callback(self, callback, method):
        if is_coroutine_or_function(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

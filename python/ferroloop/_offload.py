"""Filesystem calls the loop thread never makes: run on a thread of their own.

asyncio's loop stats and unlinks a Unix socket's path on the loop thread when it creates
a Unix server (the stale-socket check); a slow filesystem then stalls every task, and
checkers such as blockbuster (used by anyio's and aiohttp's test suites) report the call.
ferroloop makes such calls on a short-lived thread while the loop runs on.
"""

from __future__ import annotations

import threading


async def run_off_loop(loop, func, *args, discard=None):
    """Returns `func(*args)`, run on a new thread while `loop` runs on (its exception is
    raised here). If the awaiting task is cancelled first, `discard(result)` disposes of
    the result when it arrives (closes a socket the call made, say)."""
    future = loop.create_future()

    def deliver(result, error):
        if future.cancelled():
            if error is None and discard is not None:
                discard(result)
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work():
        result = error = None
        try:
            result = func(*args)
        except BaseException as exc:  # raised in the awaiting task, as if called there
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:  # the loop closed meanwhile: nobody will take the result
            if error is None and discard is not None:
                discard(result)
        finally:
            result = error = None  # no cycle through the error's traceback and this frame

    threading.Thread(target=work, name="ferroloop-fs", daemon=True).start()
    return await future

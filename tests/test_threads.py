"""call_soon_threadsafe, run_in_executor, default executors, loops in threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time

import pytest
from support import PATIENCE, handle_classes, run_once, run_until, run_with_guard

var = contextvars.ContextVar("var", default="unset")

# asyncio 3.14: call_soon_threadsafe returns an events._ThreadSafeHandle, whose lock makes
# cancel()/cancelled() from another thread wait while the callback runs.
THREAD_SAFE_HANDLE = getattr(asyncio.events, "_ThreadSafeHandle", None)


def test_call_soon_threadsafe_from_many_threads_all_arrive(loop):
    threads_count, per_thread = 10, 100
    received = []
    start = threading.Barrier(threads_count)

    def producer(tid):
        start.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(received.append, (tid, i))

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(threads_count)]

    def begin():
        for thread in threads:
            thread.start()

    loop.call_soon(begin)
    try:
        run_until(loop, lambda: len(received) == threads_count * per_thread)
    finally:
        for thread in threads:
            thread.join()
    assert len(received) == threads_count * per_thread
    for tid in range(threads_count):
        # Calls from one thread keep their order.
        assert [i for t, i in received if t == tid] == list(range(per_thread))


def test_call_soon_threadsafe_wakes_a_loop_sleeping_in_a_long_timer(loop):
    calls = []

    def from_thread():
        loop.call_soon_threadsafe(calls.append, "woken")
        loop.call_soon_threadsafe(loop.stop)

    # The loop is idle: its only timer is the guard, seconds away.
    loop.call_later(0.02, lambda: threading.Thread(target=from_thread).start())
    timed_out = run_with_guard(loop)
    assert not timed_out, "call_soon_threadsafe did not wake the loop"
    assert calls == ["woken"]


def test_call_soon_threadsafe_from_a_thread_while_loop_is_idle(loop):
    calls = []
    ready = threading.Event()

    def from_thread():
        ready.wait()
        loop.call_soon_threadsafe(calls.append, "x")
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=from_thread)
    thread.start()
    loop.call_soon(ready.set)
    try:
        assert not run_with_guard(loop)
    finally:
        thread.join()
    assert calls == ["x"]


def test_call_soon_threadsafe_returns_cancellable_handle_and_honours_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "threadsafe")
    seen = []
    cancelled = loop.call_soon_threadsafe(seen.append, "cancelled")
    kept = loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    cancelled.cancel()
    run_once(loop)
    assert seen == ["threadsafe"]
    assert kept.cancelled() is False


def test_call_soon_threadsafe_returns_a_handle(loop):
    handle = loop.call_soon_threadsafe(lambda: None)
    handle_class, timer_handle_class = handle_classes(loop)
    if THREAD_SAFE_HANDLE is not None:
        # Python 3.14+: asyncio's own class, on both loops.
        handle_class, timer_handle_class = THREAD_SAFE_HANDLE, asyncio.TimerHandle
    assert isinstance(handle, handle_class)
    assert not isinstance(handle, timer_handle_class)
    run_once(loop)


@pytest.mark.parametrize("method", ["cancel", "cancelled"])
def test_call_soon_threadsafe_handle_waits_for_a_running_callback(loop, method):
    """From another thread, cancel()/cancelled() of a running callback's handle return
    only once it finished on 3.14+ (asyncio's _ThreadSafeHandle), at once before."""
    started = threading.Event()
    finished = threading.Event()
    seen = []

    def callback():
        started.set()
        time.sleep(0.2)
        finished.set()

    def other_thread():
        handle = loop.call_soon_threadsafe(callback)
        started.wait(PATIENCE)
        result = getattr(handle, method)()
        seen.append((result, finished.is_set()))
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=other_thread)
    thread.start()
    timed_out = run_with_guard(loop, PATIENCE * 2)
    thread.join()
    assert not timed_out
    assert finished.is_set()
    result, waited = seen[0]
    assert waited is (THREAD_SAFE_HANDLE is not None)
    if method == "cancelled":
        assert result is False


def test_call_soon_threadsafe_handle_cancelled_from_another_thread_does_not_run(loop):
    calls = []
    handles = []
    thread = threading.Thread(
        target=lambda: handles.append(loop.call_soon_threadsafe(calls.append, "ran"))
    )
    thread.start()
    thread.join()
    canceller = threading.Thread(target=handles[0].cancel)
    canceller.start()
    canceller.join()
    run_once(loop)
    assert calls == []
    assert handles[0].cancelled()


def test_call_soon_threadsafe_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match=r"^Event loop is closed$"):
        loop.call_soon_threadsafe(lambda: None)


def test_run_in_executor_default_executor_runs_in_another_thread(loop):
    main_thread = threading.get_ident()

    async def main():
        fut = loop.run_in_executor(None, lambda a, b: (a + b, threading.get_ident()), 2, 3)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    result, worker = loop.run_until_complete(main())
    assert result == 5
    assert worker != main_thread


def test_run_in_executor_propagates_exceptions(loop):
    def fail():
        raise KeyError("in worker")

    async def main():
        with pytest.raises(KeyError, match="in worker"):
            await loop.run_in_executor(None, fail)
        return "caught"

    assert loop.run_until_complete(main()) == "caught"


def test_run_in_executor_many_calls(loop):
    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, abs, -i) for i in range(100)))

    assert loop.run_until_complete(main()) == list(range(100))


def test_run_in_executor_with_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-pool") as pool:

        async def main():
            return await loop.run_in_executor(pool, lambda: threading.current_thread().name)

        name = loop.run_until_complete(main())
    assert name.startswith("custom-pool")


def test_cancelling_run_in_executor_future(loop):
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        async def main():
            blocker = loop.run_in_executor(pool, release.wait, 1)
            queued = loop.run_in_executor(pool, lambda: "never")
            queued.cancel()
            release.set()
            assert await blocker is True
            with pytest.raises(asyncio.CancelledError):
                await queued

        loop.run_until_complete(main())


def test_set_default_executor_is_used(loop):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="my-default")
    loop.set_default_executor(pool)

    async def main():
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    try:
        assert loop.run_until_complete(main()).startswith("my-default")
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_set_default_executor_rejects_non_thread_pool(loop):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        class NotAThreadPool(concurrent.futures.Executor):
            def submit(self, fn, /, *args, **kwargs):
                return pool.submit(fn, *args, **kwargs)

        with pytest.raises(TypeError, match=r"^executor must be ThreadPoolExecutor instance$"):
            loop.set_default_executor(NotAThreadPool())


def test_close_shuts_down_the_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(pool)
    loop.close()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(print)
    pool.shutdown(wait=True)


def test_loop_runs_in_a_worker_thread(loop_factory):
    results = []

    def worker():
        loop = loop_factory()
        try:

            async def main():
                await asyncio.sleep(0.001)
                return asyncio.get_running_loop() is loop, threading.current_thread().name

            results.append(loop.run_until_complete(main()))
        finally:
            loop.close()

    thread = threading.Thread(target=worker, name="loop-thread")
    thread.start()
    thread.join()
    assert results == [(True, "loop-thread")]


def test_loops_in_two_threads_run_concurrently(loop_factory):
    barrier = threading.Barrier(2, timeout=2)
    results = []

    def worker(tag):
        loop = loop_factory()
        try:

            async def main():
                # Both loops must be running at once to pass the barrier.
                await loop.run_in_executor(None, barrier.wait)
                return tag

            results.append(loop.run_until_complete(main()))
        finally:
            loop.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["a", "b"]


def test_future_completed_from_a_thread_via_call_soon_threadsafe(loop):
    async def main():
        fut = loop.create_future()
        thread = threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, 7))
        thread.start()
        try:
            return await fut
        finally:
            thread.join()

    assert loop.run_until_complete(main()) == 7


def test_run_coroutine_threadsafe(loop):
    results = []

    async def compute():
        await asyncio.sleep(0.001)
        return "from loop"

    def client():
        results.append(asyncio.run_coroutine_threadsafe(compute(), loop).result(timeout=2))
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=client)
    loop.call_soon(thread.start)
    try:
        assert not run_with_guard(loop)
    finally:
        thread.join()
    assert results == ["from loop"]


def test_call_soon_threadsafe_uses_the_calling_threads_context(loop):
    seen = []

    def from_thread():
        var.set("thread value")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join()
    run_until(loop, lambda: seen)
    assert seen == ["thread value"]

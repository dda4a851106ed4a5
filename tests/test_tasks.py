"""create_future, create_task, task factories and contextvars across tasks."""

from __future__ import annotations

import asyncio
import contextvars
import sys

import pytest
from support import run_once

var = contextvars.ContextVar("var", default="unset")


def test_create_future_returns_an_asyncio_future_bound_to_the_loop(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.set_result(5)
    assert loop.run_until_complete(fut) == 5


def test_create_future_uses_asyncio_futures_future_as_it_is_now(loop, monkeypatch):
    # asyncio looks `futures.Future` up on every call; tests replace it.
    class Recorded(asyncio.Future):
        pass

    monkeypatch.setattr(asyncio.futures, "Future", Recorded)
    fut = loop.create_future()
    assert type(fut) is Recorded
    assert fut.get_loop() is loop
    monkeypatch.undo()
    assert type(loop.create_future()) is asyncio.Future


def test_create_future_in_debug_mode_records_the_caller(loop):
    loop.set_debug(True)

    def make_here():
        return loop.create_future()

    fut = make_here()
    # asyncio's traceback ends with its own create_future frame, ferroloop's at the caller.
    assert "make_here" in [frame.name for frame in fut._source_traceback[-2:]]
    fut.cancel()
    loop.set_debug(False)


def test_future_done_callbacks_run_via_the_loop(loop):
    fut = loop.create_future()
    calls = []
    fut.add_done_callback(lambda f: calls.append(f.result()))
    fut.set_result("done")
    assert calls == []
    run_once(loop)
    assert calls == ["done"]


def test_create_task_returns_an_asyncio_task(loop):
    async def main():
        return "result"

    task = loop.create_task(main())
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert task.get_name().startswith("Task-")
    assert loop.run_until_complete(task) == "result"


def test_create_task_with_name(loop):
    async def main():
        return asyncio.current_task().get_name()

    task = loop.create_task(main(), name="my-task")
    assert task.get_name() == "my-task"
    assert loop.run_until_complete(task) == "my-task"


def test_create_task_with_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "task-ctx")

    async def main():
        seen = var.get()
        var.set("modified")
        return seen

    assert loop.run_until_complete(loop.create_task(main(), context=ctx)) == "task-ctx"
    assert ctx[var] == "modified"
    assert var.get() == "unset"


def test_current_task_and_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        assert me is asyncio.current_task(loop)
        assert me in asyncio.all_tasks()
        return me

    task = loop.create_task(main())
    assert loop.run_until_complete(task) is task
    assert asyncio.all_tasks(loop) == set()


def test_task_cancellation(loop):
    started = []

    async def sleeper():
        started.append(True)
        await asyncio.sleep(3600)

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)
        assert started == [True]
        task.cancel("stop it")
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert loop.run_until_complete(main()) is True


def test_gather_many_tasks(loop):
    async def work(i):
        await asyncio.sleep(0)
        return i * i

    async def main():
        return await asyncio.gather(*(work(i) for i in range(200)))

    assert loop.run_until_complete(main()) == [i * i for i in range(200)]


def test_contextvar_set_in_one_task_is_not_seen_in_another(loop):
    async def setter():
        var.set("from setter")
        await asyncio.sleep(0)
        return var.get()

    async def reader():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("parent")
        return await asyncio.gather(setter(), reader())

    assert loop.run_until_complete(main()) == ["from setter", "parent"]
    assert var.get() == "unset"


def test_task_copies_the_context_when_created(loop):
    async def child():
        return var.get()

    async def main():
        var.set("before")
        task = loop.create_task(child())
        var.set("after")
        return await task

    assert loop.run_until_complete(main()) == "before"


def test_task_factory_get_and_set(loop):
    assert loop.get_task_factory() is None
    created = []

    def factory(loop_arg, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop_arg, **kwargs)
        created.append((loop_arg, task, kwargs))
        return task

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return "made by factory"

    task = loop.create_task(main(), name="named")
    # Python 3.14 hands the factory create_task's keywords; before, it set the name after.
    passed = {"name": "named"} if sys.version_info >= (3, 14) else {}
    assert created == [(loop, task, passed)]
    assert task.get_name() == "named"
    assert loop.run_until_complete(task) == "made by factory"

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(main())
    assert len(created) == 1


def test_task_factory_assigned_to_the_private_attribute_is_used(loop):
    # asyncio's create_task reads `self._task_factory`; libraries assign it directly.
    made = []

    def factory(loop_arg, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop_arg, **kwargs)

    async def main():
        return 7

    loop._task_factory = factory
    assert loop.get_task_factory() is factory
    assert loop.run_until_complete(loop.create_task(main())) == 7
    assert len(made) == 1
    loop._task_factory = None
    assert loop.get_task_factory() is None
    assert loop.run_until_complete(loop.create_task(main())) == 7
    assert len(made) == 1


def test_task_factory_receives_context_when_given(loop):
    received = []

    def factory(loop_arg, coro, **kwargs):
        received.append(kwargs)
        return asyncio.Task(coro, loop=loop_arg, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()

    async def main():
        return 1

    loop.run_until_complete(loop.create_task(main(), context=ctx))
    assert received == [{"context": ctx}]


def test_create_task_keywords_follow_the_running_python(loop):
    """3.14 passes every keyword to the task factory as given; before, create_task takes
    only name and context."""
    received = []

    def factory(loop_arg, coro, **kwargs):
        received.append(kwargs)
        coro.close()
        return loop_arg.create_future()

    loop.set_task_factory(factory)

    async def main():
        return 1

    if sys.version_info >= (3, 14):
        loop.create_task(main(), priority=3, name=None)
        loop.create_task(main())
        assert received == [{"priority": 3, "name": None}, {}]
    else:
        coro = main()
        with pytest.raises(TypeError, match="unexpected keyword argument 'priority'"):
            loop.create_task(coro, priority=3)
        coro.close()
        assert received == []
    loop.set_task_factory(None)
    coro = main()
    with pytest.raises(TypeError):
        loop.create_task(coro, priority=3)  # asyncio.Task takes no such keyword
    coro.close()


def test_create_task_eager_start(loop):
    steps = []

    async def child():
        steps.append("child started")
        await asyncio.sleep(0)
        return "done"

    async def main():
        if sys.version_info < (3, 14):
            coro = child()
            with pytest.raises(TypeError, match="eager_start"):
                loop.create_task(coro, eager_start=True)
            coro.close()
            return None
        task = loop.create_task(child(), eager_start=True)
        # An eager task has run up to its first suspension before create_task returns.
        assert steps == ["child started"]
        return await task

    expected = "done" if sys.version_info >= (3, 14) else None
    assert loop.run_until_complete(main()) == expected


def test_task_factory_used_by_run_until_complete_and_ensure_future(loop):
    created = []

    def factory(loop_arg, coro):
        created.append(coro)
        return asyncio.Task(coro, loop=loop_arg)

    loop.set_task_factory(factory)

    async def child():
        return 2

    async def main():
        return await asyncio.ensure_future(child()) + 1

    assert loop.run_until_complete(main()) == 3
    assert len(created) == 2


@pytest.mark.parametrize("bad", [42, "factory"])
def test_set_task_factory_rejects_non_callable(loop, bad):
    with pytest.raises(TypeError, match=r"^task factory must be a callable or None$"):
        loop.set_task_factory(bad)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    steps = []

    async def eager(tag):
        steps.append(f"{tag} started")
        return tag

    async def lazy_then():
        steps.append("lazy started")
        await asyncio.sleep(0)
        steps.append("lazy resumed")
        return "lazy"

    async def main():
        task = loop.create_task(eager("eager"))
        # Ran synchronously to completion inside create_task().
        assert steps == ["eager started"]
        assert task.done()
        other = loop.create_task(lazy_then())
        assert steps == ["eager started", "lazy started"]
        assert not other.done()
        return await task, await other

    assert loop.run_until_complete(main()) == ("eager", "lazy")
    assert steps[-1] == "lazy resumed"


def test_synchronisation_primitives_across_tasks(loop):
    async def producer(queue, done):
        for i in range(5):
            await queue.put(i)
            await asyncio.sleep(0)
        done.set()

    async def consumer(queue, lock, out):
        while True:
            item = await queue.get()
            async with lock:
                out.append(item)
            queue.task_done()

    async def main():
        queue, lock, done, out = asyncio.Queue(), asyncio.Lock(), asyncio.Event(), []
        workers = [loop.create_task(consumer(queue, lock, out)) for _ in range(2)]
        await producer(queue, done)
        await done.wait()
        await queue.join()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return sorted(out)

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]


def test_create_task_source_traceback_ends_at_the_caller(loop):
    loop.set_debug(True)

    async def work():
        pass

    def spawn_here():
        return loop.create_task(work())

    task = spawn_here()
    assert task._source_traceback[-1].name == "spawn_here"
    loop.run_until_complete(task)

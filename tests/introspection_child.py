"""A program with named tasks for `python -m asyncio ps|pstree PID` (tests/test_introspection.py).

Usage: python introspection_child.py {asyncio,ferroloop} {main,thread}

The loop runs in the main thread or in a thread of its own.

On the chosen loop, the main task "ps-main" starts, inside a TaskGroup:
  ps-group-1, ps-group-2   outer_step -> middle_step -> inner_step
  ps-gatherer              gather_two, which gathers ps-gathered-1 and ps-gathered-2
                           (outer_step -> middle_step -> inner_step each)
  ps-eager                 created by asyncio.eager_task_factory: eager_step ->
                           middle_step -> inner_step
Every inner_step waits on one gate. Once all five have arrived there, the program checks
`asyncio.all_tasks(loop)` and `asyncio.current_task()` itself, prints "ready <loop
class> <native id of the loop's thread>" and waits in the TaskGroup's exit. The gate
opens by itself after 60 seconds, so the program never outlives its test by long; the
test kills it earlier.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

READY_TIMEOUT = 30
LIFETIME = 60
ARRIVED: list[str] = []
EXPECTED = {
    "ps-main",
    "ps-group-1",
    "ps-group-2",
    "ps-gatherer",
    "ps-gathered-1",
    "ps-gathered-2",
    "ps-eager",
}


async def inner_step(gate):
    ARRIVED.append(asyncio.current_task().get_name())
    await gate


async def middle_step(gate):
    await inner_step(gate)


async def outer_step(gate):
    await middle_step(gate)


async def eager_step(gate):
    await middle_step(gate)


async def gather_two(gate):
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        loop.create_task(outer_step(gate), name="ps-gathered-1"),
        loop.create_task(outer_step(gate), name="ps-gathered-2"),
    )


def fail(message):
    """Ends the whole program at once with `message` on stderr (from any thread)."""
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


async def all_arrived(count):
    while len(ARRIVED) < count:
        await asyncio.sleep(0.01)


async def main():
    loop = asyncio.get_running_loop()
    asyncio.current_task().set_name("ps-main")
    gate = loop.create_future()
    loop.call_later(LIFETIME, gate.set_result, None)
    async with asyncio.TaskGroup() as group:
        group.create_task(outer_step(gate), name="ps-group-1")
        group.create_task(outer_step(gate), name="ps-group-2")
        loop.create_task(gather_two(gate), name="ps-gatherer")
        loop.set_task_factory(asyncio.eager_task_factory)
        eager = loop.create_task(eager_step(gate), name="ps-eager")
        loop.set_task_factory(None)
        # An eager task runs up to its first suspension inside create_task.
        if ARRIVED != ["ps-eager"]:
            fail(f"the eager task did not start eagerly: {ARRIVED}")
        await asyncio.wait_for(all_arrived(5), READY_TIMEOUT)
        names = {task.get_name() for task in asyncio.all_tasks(loop)}
        if names != EXPECTED:
            fail(f"asyncio.all_tasks(loop) names {sorted(names)}")
        if asyncio.current_task().get_name() != "ps-main" or eager.done():
            fail("current_task() is not ps-main, or ps-eager ended")
        loop_class = f"{type(loop).__module__}.{type(loop).__qualname__}"
        print(f"ready {loop_class} {threading.get_native_id()}", flush=True)


def new_loop(kind):
    if kind == "ferroloop":
        import ferroloop

        return ferroloop.new_event_loop()
    return asyncio.new_event_loop()


def run(kind):
    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        runner.run(main())


if __name__ == "__main__":
    if sys.argv[2] == "thread":
        worker = threading.Thread(target=run, args=(sys.argv[1],), name="loop-thread")
        worker.start()
        worker.join()
    else:
        run(sys.argv[1])

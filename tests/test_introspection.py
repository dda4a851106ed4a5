"""Python 3.14's task introspection on both loops.

In the process: `asyncio.capture_call_graph`, `format_call_graph` and `print_call_graph`
on a chain of three coroutines in a task, a TaskGroup, `gather` and an eager task.

From outside: `python -m asyncio ps PID` and `pstree PID`, which read a live process's
memory (its per-thread lists of tasks, and what each task awaits), against a child
process (tests/introspection_child.py) whose named tasks run on the loop under test.

The APIs are new in Python 3.14; on older versions these tests do not run.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import select
import subprocess
import sys
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(asyncio, "capture_call_graph"),
    reason="asyncio.capture_call_graph and python -m asyncio ps are new in Python 3.14",
)

CHILD = os.path.join(os.path.dirname(__file__), "introspection_child.py")
TIMEOUT = 60


def frame_names(graph):
    """The function names of a FutureCallGraph's call stack, innermost first."""
    return [entry.frame.f_code.co_name for entry in graph.call_stack]


def in_order(text, *parts):
    """True if every part occurs in `text`, each after the one before."""
    pattern = ".*".join(re.escape(part) for part in parts)
    return re.search(pattern, text, re.DOTALL) is not None


async def inner(gate, seen):
    seen["own"] = asyncio.capture_call_graph()
    seen["text"] = asyncio.format_call_graph()
    printed = io.StringIO()
    asyncio.print_call_graph(file=printed)
    seen["printed"] = printed.getvalue()
    return await gate


async def middle(gate, seen):
    return await inner(gate, seen)


async def outer(gate, seen):
    return await middle(gate, seen)


async def wait_for_chain(chain):
    return await chain


def test_call_graph_of_a_chain_of_three_coroutines(loop):
    seen = {}

    async def main():
        gate = loop.create_future()
        chain = loop.create_task(outer(gate, seen), name="chain")
        await asyncio.sleep(0)
        # The chain ran up to `await gate`; it captured its own graph on the way.
        own = seen["own"]
        assert own.future is chain
        assert frame_names(own) == ["inner", "middle", "outer"]
        assert own.awaited_by == ()
        for text in (seen["text"], seen["printed"]):
            assert text.startswith("* Task(name='chain', id=")
            assert in_order(text, "+ Call stack:", "inner()", "middle()", "outer()")
            assert "Awaited by" not in text

        waiter = loop.create_task(wait_for_chain(chain), name="waiter")
        await asyncio.sleep(0)
        # From outside: the suspended chain, now awaited by `waiter`.
        graph = asyncio.capture_call_graph(chain)
        assert graph.future is chain
        assert frame_names(graph) == ["inner", "middle", "outer"]
        assert [parent.future for parent in graph.awaited_by] == [waiter]
        assert frame_names(graph.awaited_by[0]) == ["wait_for_chain"]
        text = asyncio.format_call_graph(chain)
        assert in_order(
            text,
            "* Task(name='chain'",
            "async inner()",
            "async middle()",
            "async outer()",
            "+ Awaited by:",
            "    * Task(name='waiter'",
            "async wait_for_chain()",
        )
        printed = io.StringIO()
        asyncio.print_call_graph(chain, file=printed)
        assert printed.getvalue() == text + "\n"
        gate.set_result("done")
        return await waiter

    assert loop.run_until_complete(loop.create_task(main(), name="main")) == "done"


async def leaf(gate):
    await gate


async def branch(gate):
    await leaf(gate)


def test_call_graph_of_a_task_group(loop):
    async def main():
        gate = loop.create_future()
        async with asyncio.TaskGroup() as group:
            one = group.create_task(branch(gate), name="group-one")
            two = group.create_task(branch(gate), name="group-two")
            await asyncio.sleep(0)
            for task in (one, two):
                graph = asyncio.capture_call_graph(task)
                assert graph.future is task
                assert frame_names(graph) == ["leaf", "branch"]
                # A TaskGroup's tasks are awaited by the task that opened the group.
                assert [parent.future for parent in graph.awaited_by] == [main_task]
            text = asyncio.format_call_graph(one)
            assert in_order(
                text,
                "* Task(name='group-one'",
                "async leaf()",
                "async branch()",
                "+ Awaited by:",
                "* Task(name='group-main'",
            )
            # The current task's own graph, captured from its running frame.
            own = asyncio.capture_call_graph()
            assert own.future is main_task
            assert frame_names(own) == ["main"]
            gate.set_result(None)
        return one.done() and two.done()

    main_task = loop.create_task(main(), name="group-main")
    assert loop.run_until_complete(main_task) is True


def test_call_graph_of_gather(loop):
    graphs = []
    texts = []

    async def capturing_leaf():
        graphs.append(asyncio.capture_call_graph())
        texts.append(asyncio.format_call_graph())
        await asyncio.sleep(0)
        return asyncio.current_task().get_name()

    async def capturing_branch():
        return await capturing_leaf()

    async def main():
        return await asyncio.gather(capturing_branch(), capturing_branch())

    main_task = loop.create_task(main(), name="gather-main")
    names = loop.run_until_complete(main_task)
    assert len(graphs) == 2
    assert [graph.future.get_name() for graph in graphs] == names
    for graph in graphs:
        assert frame_names(graph) == ["capturing_leaf", "capturing_branch"]
        # gather's children are awaited by the task that called gather.
        assert [parent.future for parent in graph.awaited_by] == [main_task]
        assert frame_names(graph.awaited_by[0]) == ["main"]
    for name, text in zip(names, texts, strict=True):
        assert in_order(
            text,
            f"* Task(name={name!r}",
            "async test_call_graph_of_gather.<locals>.capturing_leaf()",
            "async test_call_graph_of_gather.<locals>.capturing_branch()",
            "+ Awaited by:",
            "    * Task(name='gather-main'",
            "async test_call_graph_of_gather.<locals>.main()",
        )


def test_call_graph_of_an_eager_task(loop):
    seen = {}

    async def eager_leaf(gate):
        seen["current"] = asyncio.current_task()
        seen["own"] = asyncio.capture_call_graph()
        seen["text"] = asyncio.format_call_graph()
        await gate

    async def eager_branch(gate):
        await eager_leaf(gate)

    async def main():
        gate = loop.create_future()
        loop.set_task_factory(asyncio.eager_task_factory)
        try:
            task = loop.create_task(eager_branch(gate), name="eager-child")
        finally:
            loop.set_task_factory(None)
        # Its first step ran inside create_task, as the current task, under its name.
        assert seen["current"] is task
        assert seen["own"].future is task
        assert frame_names(seen["own"]) == ["eager_leaf", "eager_branch"]
        assert seen["text"].startswith("* Task(name='eager-child', id=")
        assert task in asyncio.all_tasks(loop)
        graph = asyncio.capture_call_graph(task)
        assert frame_names(graph) == ["eager_leaf", "eager_branch"]
        gate.set_result(None)
        await task
        assert task not in asyncio.all_tasks(loop)

    loop.run_until_complete(main())


# -- python -m asyncio ps / pstree PID -------------------------------------------------


@contextmanager
def child_process(loop_kind, where):
    """Starts tests/introspection_child.py on `loop_kind`, in the main thread or a thread
    of its own (`where`); yields (its pid, the native id of the loop's thread) once it is
    ready (every task suspended); kills it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, CHILD, loop_kind, where],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        readable, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        line = proc.stdout.readline() if readable else ""
        if not line.startswith("ready "):
            proc.kill()
            _, errors = proc.communicate(timeout=TIMEOUT)
            pytest.fail(f"the child did not get ready: {line!r} {errors}")
        _, loop_class, thread_id = line.split()
        expected = "ferroloop." if loop_kind == "ferroloop" else "asyncio."
        assert loop_class.startswith(expected), loop_class
        assert (int(thread_id) == proc.pid) == (where == "main"), (thread_id, proc.pid)
        yield proc.pid, int(thread_id)
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


def asyncio_tool(command, pid):
    """The output of `python -m asyncio <command> <pid>` (which must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncio", command, str(pid)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# A loop in a thread other than the main one: 3.14's `python -m asyncio ps` lists no task
# of such a thread, on asyncio's own loop either (it does from 3.15).
WHERE = pytest.mark.parametrize(
    "where",
    [
        "main",
        pytest.param(
            "thread",
            marks=pytest.mark.skipif(
                sys.version_info < (3, 15),
                reason="3.14: python -m asyncio ps finds no task of a loop in another thread",
            ),
        ),
    ],
)


@WHERE
def test_asyncio_ps_lists_the_tasks_of_a_live_process(loop_kind, where):
    with child_process(loop_kind, where) as (pid, thread_id):
        output = asyncio_tool("ps", pid)
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["tid", "task", "id"]
    rows = {}
    for line in lines[2:]:
        tid, _, name = line.split()[:3]
        assert name not in rows, f"task {name} listed twice:\n{output}"
        # Every task is listed under the thread that runs its loop.
        assert int(tid) == thread_id, line
        rows[name] = line
    assert set(rows) == {
        "ps-main",
        "ps-group-1",
        "ps-group-2",
        "ps-gatherer",
        "ps-gathered-1",
        "ps-gathered-2",
        "ps-eager",
    }, output
    chain = "inner_step -> middle_step -> outer_step"
    # task: (its coroutine stack, what awaits it, the awaiting task)
    expected = {
        "ps-main": ("TaskGroup._aexit -> TaskGroup.__aexit__ -> main", None, None),
        "ps-group-1": (chain, "TaskGroup._aexit -> TaskGroup.__aexit__ -> main", "ps-main"),
        "ps-group-2": (chain, "TaskGroup._aexit -> TaskGroup.__aexit__ -> main", "ps-main"),
        "ps-gatherer": ("gather_two", None, None),
        "ps-gathered-1": (chain, "gather_two", "ps-gatherer"),
        "ps-gathered-2": (chain, "gather_two", "ps-gatherer"),
        "ps-eager": ("inner_step -> middle_step -> eager_step", None, None),
    }
    for name, (stack, awaiter_chain, awaiter) in expected.items():
        row = rows[name]
        assert re.search(rf" {re.escape(name)} +{re.escape(stack)}( |$)", row), row
        if awaiter is None:
            assert row.rstrip().endswith(" 0x0"), row
        else:
            assert re.search(
                rf" {re.escape(awaiter_chain)} +{re.escape(awaiter)} +0x[0-9a-f]+$",
                row.rstrip(),
            ), row


def parse_tree(output):
    """pstree's forest as a list of (label, parent index or None)."""
    nodes = []
    open_at_depth = {}
    for line in output.splitlines():
        match = re.match(r"^(.*?)(└── |├── )(.*)$", line)
        assert match, line
        depth = len(match.group(1)) // 4
        parent = open_at_depth.get(depth - 1) if depth else None
        open_at_depth[depth] = len(nodes)
        nodes.append((match.group(3).strip(), parent))
    return nodes


@WHERE
def test_asyncio_pstree_draws_the_tasks_of_a_live_process(loop_kind, where):
    with child_process(loop_kind, where) as (pid, _):
        output = asyncio_tool("pstree", pid)
    nodes = parse_tree(output)
    words = [label.split()[0] if not label.startswith("(T)") else label for label, _ in nodes]

    def task_node(name):
        matches = [i for i, word in enumerate(words) if word == f"(T) {name}"]
        assert len(matches) == 1, output
        return matches[0]

    def ancestors(index):
        found = []
        while (index := nodes[index][1]) is not None:
            found.append(words[index])
        return found[::-1]

    def stack_below(index):
        # A task nobody else awaits from: its coroutines hang below it in a single chain.
        chain = []
        while children := [i for i, (_, parent) in enumerate(nodes) if parent == index]:
            assert len(children) == 1, output
            index = children[0]
            chain.append(words[index])
        return chain

    roots = [words[i] for i, (_, parent) in enumerate(nodes) if parent is None]
    assert sorted(roots) == ["(T) ps-eager", "(T) ps-gatherer", "(T) ps-main"], output
    for name in ("ps-group-1", "ps-group-2"):
        node = task_node(name)
        assert ancestors(node) == [
            "(T) ps-main",
            "main",
            "TaskGroup.__aexit__",
            "TaskGroup._aexit",
        ], output
        assert stack_below(node) == ["outer_step", "middle_step", "inner_step"], output
    for name in ("ps-gathered-1", "ps-gathered-2"):
        node = task_node(name)
        assert ancestors(node) == ["(T) ps-gatherer", "gather_two"], output
        assert stack_below(node) == ["outer_step", "middle_step", "inner_step"], output
    assert stack_below(task_node("ps-eager")) == ["eager_step", "middle_step", "inner_step"]

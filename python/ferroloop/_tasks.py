"""Futures and tasks: CPython's own asyncio.Future and asyncio.Task, bound to this loop."""

from __future__ import annotations

import inspect
import sys
from asyncio import base_events, futures, tasks

# 3.13 gave Task.set_name to every task factory's result; before, non-Task results may
# lack it and asyncio skipped them.
_ALWAYS_SET_NAME = sys.version_info >= (3, 13)
# Newer asyncio (3.14; `create_task(coro, **kwargs)`) hands every keyword, `name` among
# them, to the task factory and names nothing afterwards, so an eager task has its name
# while its first step runs (and `asyncio.capture_call_graph` shows it); older asyncio
# (`create_task(coro, *, name=None, context=None)`) names the factory's result.
_FACTORY_TAKES_NAME = (
    "name" not in inspect.signature(base_events.BaseEventLoop.create_task).parameters
)


class TasksMixin:
    """create_future, create_task and the task factory."""

    _task_factory = None

    def create_future(self):
        """A new asyncio.Future attached to this loop."""
        return futures.Future(loop=self)

    def _create_task_slow(self, coro, *, name=None, context=None, **kwargs):
        """`create_task` with a task factory or extra keywords (the Rust `create_task`
        handles the rest itself)."""
        self._check_closed()
        factory = self._task_factory
        if factory is None:
            if context is not None:
                # Python 3.10's Task has no context argument; pass it only when given.
                kwargs["context"] = context
            task = tasks.Task(coro, loop=self, name=name, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        if context is not None:
            kwargs["context"] = context
        if _FACTORY_TAKES_NAME:
            if name is not None:
                kwargs["name"] = name
            return factory(self, coro, **kwargs)
        task = factory(self, coro, **kwargs)
        if name is not None:
            set_name = getattr(task, "set_name", None)
            if set_name is not None or _ALWAYS_SET_NAME:
                task.set_name(name)
        return task

    def set_task_factory(self, factory):
        """Sets `factory(loop, coro, **kwargs)` as the task factory (None: asyncio.Task)."""
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        """The task factory, or None."""
        return self._task_factory

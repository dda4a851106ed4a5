"""Tasks made by a task factory (`create_future` and the common `create_task` are Rust
methods of `_core.Loop`, in `tasks.rs`)."""

from __future__ import annotations

import sys

# 3.14 hands a task factory every keyword create_task was given, as given.
_FACTORY_GETS_ALL_KEYWORDS = sys.version_info >= (3, 14)
# 3.13 gave Task.set_name to every task factory's result; before, non-Task results may
# lack it and asyncio skipped them.
_ALWAYS_SET_NAME = sys.version_info >= (3, 13)


class TasksMixin:
    """The task factory (kept by the Rust loop as `_task_factory`, which its
    `create_task` reads) and `create_task` with one."""

    def _create_task_slow(self, coro, **kwargs):
        """`create_task` with a task factory (the Rust `create_task`, which has checked
        the keywords, handles the rest itself)."""
        self._check_closed()
        factory = self._task_factory
        if _FACTORY_GETS_ALL_KEYWORDS:
            return factory(self, coro, **kwargs)
        name = kwargs.get("name")
        context = kwargs.get("context")
        # Before 3.14 the factory got `context=` only when one was given.
        task = factory(self, coro) if context is None else factory(self, coro, context=context)
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

"""Human-readable descriptions of callbacks and handles for logs and error messages."""

from __future__ import annotations

import functools
import reprlib
from asyncio import events


def describe_callback(callback, args) -> str:
    """`name(arg, ...) at file:line`, the form asyncio uses in its messages."""
    inner = callback
    while isinstance(inner, functools.partial):
        args = inner.args + tuple(args or ())
        inner = inner.func
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None)
    if name is None:
        name = repr(inner)
    text = f"{name}({', '.join(reprlib.repr(a) for a in (args or ()))})"
    code = getattr(getattr(inner, "__func__", inner), "__code__", None)
    if code is not None:
        text += f" at {code.co_filename}:{code.co_firstlineno}"
    return text


def describe_handle(handle) -> str:
    """The handle's task when it steps one (as asyncio logs it), else the callback."""
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    if owner is not None and type(owner).__name__ == "Task":
        return repr(owner)
    if isinstance(owner, events.Handle):
        # The loop's wrapper of an asyncio handle (call_soon_threadsafe on 3.14+): its
        # callback is that handle's _run.
        return describe_handle(owner)
    if callback is None:
        return repr(handle)
    return describe_callback(callback, handle._args)

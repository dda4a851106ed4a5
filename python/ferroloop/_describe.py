"""Human-readable descriptions of callbacks and handles for logs and error messages."""

from __future__ import annotations

import asyncio
import functools
import inspect
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


def _function_source(func):
    """(file, first line) of a plain function, seen through wrappers and partials, as
    asyncio finds it; None for anything else (bound methods included, as in asyncio)."""
    func = inspect.unwrap(func)
    if inspect.isfunction(func):
        return func.__code__.co_filename, func.__code__.co_firstlineno
    if isinstance(func, (functools.partial, functools.partialmethod)):
        return _function_source(func.func)
    return None


def _call_text(func, args, kwargs, suffix=""):
    """`name(args)`, a partial as `name(its args)(call args)`: asyncio's notation."""
    if isinstance(func, functools.partial):
        return _call_text(func.func, func.args, func.keywords, _arguments(args, kwargs) + suffix)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return (name or repr(func)) + _arguments(args, kwargs) + suffix


def _arguments(args, kwargs):
    items = [reprlib.repr(a) for a in args or ()]
    items += [f"{k}={reprlib.repr(v)}" for k, v in (kwargs or {}).items()]
    return f"({', '.join(items)})"


def callback_source(callback, args) -> str:
    """A callback as asyncio's handle reprs show it: `name(args) at file:line`."""
    text = _call_text(callback, args, None)
    source = _function_source(callback)
    if source:
        text += f" at {source[0]}:{source[1]}"
    return text


def asyncio_handle_repr(handle) -> str:
    """What `repr()` of an asyncio `Handle`/`TimerHandle` with the same state reads:
    `<Handle [cancelled] callback(args) at file:line [created at file:line]>`."""
    kind = "TimerHandle" if hasattr(handle, "when") else "Handle"
    info = [kind]
    if handle.cancelled():
        info.append("cancelled")
    if kind == "TimerHandle":
        info.append(f"when={handle.when()}")
    if handle._callback is not None:
        info.append(callback_source(handle._callback, handle._args))
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return f"<{' '.join(info)}>"


def format_handle(handle) -> str:
    """asyncio's `_format_handle`: the task a handle steps, else the handle's repr."""
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner)
    if isinstance(owner, events.Handle):
        # The loop's wrapper of an asyncio handle (call_soon_threadsafe on 3.14+): its
        # callback is that handle's _run.
        return repr(owner)
    return asyncio_handle_repr(handle)

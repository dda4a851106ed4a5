"""The package API: run(), new_event_loop(), Loop, EventLoopPolicy, install(), and the
asyncio entry points that take a loop factory."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import warnings

import pytest

# asyncio.get_event_loop_policy() warns from 3.14 on; its quiet twin is new in 3.14.
current_policy = getattr(asyncio.events, "_get_event_loop_policy", asyncio.get_event_loop_policy)

var = contextvars.ContextVar("var", default="unset")


def test_run_returns_the_result_of_main(api):
    async def main(x):
        await asyncio.sleep(0.001)
        return x + 1

    assert api.run(main(41)) == 42


def test_run_uses_a_fresh_loop_and_closes_it(api):
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())

    api.run(main())
    api.run(main())
    first, second = seen
    assert isinstance(first, api.Loop)
    assert first is not second
    assert first.is_closed() and second.is_closed()
    assert asyncio.events._get_running_loop() is None


def test_run_propagates_the_exception_of_main(api):
    async def main():
        raise ValueError("from main")

    with pytest.raises(ValueError, match=r"^from main$"):
        api.run(main())


def test_run_cancels_leftover_tasks(api):
    cancelled = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)

    api.run(main())
    assert cancelled == [True]


def test_run_finalizes_async_generators(api):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")

    gen = agen()

    async def main():
        await gen.__anext__()

    api.run(main())
    assert events == ["finalized"]


def test_run_with_debug(api):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert api.run(main(), debug=True) is True


def test_run_inside_a_running_loop_raises(api):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError):
                api.run(coro)
        finally:
            coro.close()
        return "done"

    assert api.run(main()) == "done"


def test_new_event_loop_returns_a_loop_instance(api):
    loop = api.new_event_loop()
    try:
        assert isinstance(loop, api.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert issubclass(api.Loop, asyncio.AbstractEventLoop)
        assert not loop.is_closed()
        assert not loop.is_running()
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_new_event_loop_returns_distinct_loops(api):
    first, second = api.new_event_loop(), api.new_event_loop()
    try:
        assert first is not second
    finally:
        first.close()
        second.close()


def test_event_loop_policy_creates_loops(api):
    policy = api.EventLoopPolicy()
    abstract = getattr(asyncio.events, "_AbstractEventLoopPolicy", None)
    assert isinstance(policy, abstract or asyncio.AbstractEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, api.Loop)
    finally:
        loop.close()


def test_install_makes_asyncio_create_loops_of_this_kind(api):
    api.install()
    assert isinstance(current_policy(), api.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, api.Loop)
    finally:
        loop.close()

    async def main():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(main()), api.Loop)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_asyncio_run_with_loop_factory(api):
    async def main():
        return asyncio.get_running_loop()

    loop = asyncio.run(main(), loop_factory=api.new_event_loop)
    assert isinstance(loop, api.Loop)
    assert loop.is_closed()


def test_runner_with_loop_factory(api):
    with asyncio.Runner(loop_factory=api.new_event_loop) as runner:

        async def main(x):
            await asyncio.sleep(0.001)
            return asyncio.get_running_loop(), x

        loop, result = runner.run(main(1))
        assert result == 1
        assert loop is runner.get_loop()
        assert isinstance(loop, api.Loop)
        # The same loop serves every run() of the runner.
        assert runner.run(main(2)) == (loop, 2)
    assert loop.is_closed()


def test_runner_keeps_one_context_across_runs(api):
    async def set_value():
        var.set("kept")

    async def get_value():
        return var.get()

    with asyncio.Runner(loop_factory=api.new_event_loop) as runner:
        runner.run(set_value())
        assert runner.run(get_value()) == "kept"
        ctx = contextvars.Context()
        assert runner.run(get_value(), context=ctx) == "unset"
    assert var.get() == "unset"


def test_runner_with_debug(api):
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=api.new_event_loop) as runner:
        assert runner.run(main()) is True


def test_policy_api_warns_as_asyncio_does_on_this_python(api):
    """From Python 3.14, naming the policy class and installing a policy are deprecated
    (policies go in 3.16): each gives one DeprecationWarning, which names the caller."""
    deprecated = sys.version_info >= (3, 14)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy_class = getattr(api.module, api.policy_name)
    assert [w.category for w in caught] == ([DeprecationWarning] if deprecated else [])
    assert all(w.filename == __file__ for w in caught)
    assert policy_class is api.EventLoopPolicy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.install_policy()
    assert [w.category for w in caught] == ([DeprecationWarning] if deprecated else [])
    assert all("slated for removal in Python 3.16" in str(w.message) for w in caught)
    assert isinstance(current_policy(), policy_class)

"""The one-line ways of running each framework on ferroloop (README, "Frameworks"), each
checked from inside: a handler or test reports the class of its running loop. Every case
runs on ferroloop and, through the very same option, on asyncio's own loop as the control.

* uvicorn's command line, `--loop ferroloop:new_event_loop` (any `module:factory`,
  uvicorn >= 0.36), started as a child process and asked for a page;
* aiohttp, `web.run_app(app, loop=ferroloop.new_event_loop())` in a child process,
  stopped by SIGTERM;
* anyio, `anyio.run(main, backend="asyncio",
  backend_options={"loop_factory": ferroloop.new_event_loop})`;
* pytest-asyncio (>= 1.4), the `pytest_asyncio_loop_factories` hook in a conftest, in a
  pytest run of its own.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import ferroloop
from support import LOOPS, TIMEOUT, free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# What a handler reports on each loop (asyncio.new_event_loop() makes a SelectorEventLoop).
EXPECTED = {
    "asyncio": class_name(asyncio.SelectorEventLoop),
    "ferroloop": class_name(ferroloop.Loop),
}
# The `module:factory` uvicorn's --loop takes for each loop.
FACTORY_PATHS = {"asyncio": "asyncio:new_event_loop", "ferroloop": "ferroloop:new_event_loop"}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: ferroloop importable from where this process
    imported it (the source tree or the installed wheel), whatever the child's cwd."""
    env = dict(os.environ, **extra)
    where = os.path.dirname(os.path.dirname(os.path.abspath(ferroloop.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
    return env


def get_page(port: int) -> str:
    url = f"http://127.0.0.1:{port}/"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        assert response.status == 200
        return response.read().decode()


def wait_until_listening(proc: subprocess.Popen, port: int) -> None:
    """Waits (at most TIMEOUT seconds) until something accepts connections on `port`; fails
    if `proc` exits first."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


def read_line(proc: subprocess.Popen) -> str:
    """The child's next stdout line ("" at EOF), waiting at most TIMEOUT seconds."""
    readable, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert readable, "the child printed nothing in time"
    return proc.stdout.readline()


def stop(proc: subprocess.Popen, signum: int) -> tuple[str, str]:
    """Sends `signum` and waits for the child to exit; returns its remaining (stdout, stderr).
    The child is killed if it does not exit in time (the test then fails)."""
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(
            f"the child did not exit within {TIMEOUT} s of signal {signum}"
        ) from None


def test_uvicorn_command_line_loop_option(loop_name):
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", HERE, "wiring_apps:asgi_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--loop", FACTORY_PATHS[loop_name]]
    command += ["--log-level", "info", "--no-access-log"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        wait_until_listening(proc, port)
        assert get_page(port) == EXPECTED[loop_name]
    finally:
        _, log = stop(proc, signal.SIGINT)
    # It also shut down cleanly: the lifespan's shutdown ran on the same loop.
    assert "Application shutdown complete." in log, log
    assert "Finished server process" in log, log
    assert "Traceback" not in log, log


def test_aiohttp_run_app_with_a_loop(loop_name):
    port = free_port()
    command = [sys.executable, os.path.join(HERE, "wiring_apps.py"), "aiohttp", loop_name]
    proc = subprocess.Popen(
        [*command, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert read_line(proc) == "ready\n"
        assert get_page(port) == EXPECTED[loop_name]
    finally:
        output, errors = stop(proc, signal.SIGTERM)
    # run_app returned on the signal and closed the loop it was handed.
    assert (proc.returncode, output, errors) == (0, "stopped closed=True\n", "")


def test_anyio_run_with_a_loop_factory(loop_name):
    import anyio

    async def main():
        await anyio.sleep(0.01)
        assert await anyio.to_thread.run_sync(lambda: 6 * 7) == 42
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0.01)
        return class_name(type(asyncio.get_running_loop()))

    options = {"loop_factory": LOOPS[loop_name]}
    assert anyio.run(main, backend="asyncio", backend_options=options) == EXPECTED[loop_name]


PYTEST_ASYNCIO_CONFTEST = """\
import asyncio
import os

import ferroloop

FACTORIES = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}


def pytest_asyncio_loop_factories(config, item):
    kind = os.environ["WIRING_LOOP"]
    return {kind: FACTORIES[kind]}
"""

PYTEST_ASYNCIO_TESTS = """\
import asyncio
import os

import pytest
import pytest_asyncio


def running_loop_class():
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


async def echo(reader, writer):
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def fixture_loop():
    yield asyncio.get_running_loop()


@pytest.mark.asyncio
async def test_runs_on_the_configured_loop(fixture_loop):
    assert running_loop_class() == os.environ["WIRING_EXPECTED"]
    assert fixture_loop is asyncio.get_running_loop()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"ping\\n")
        assert await reader.readline() == b"ping\\n"
        writer.close()
        await writer.wait_closed()


@pytest.mark.asyncio
async def test_a_second_test_gets_the_same_kind_of_loop():
    assert running_loop_class() == os.environ["WIRING_EXPECTED"]
    await asyncio.sleep(0.01)
"""


def test_pytest_asyncio_loop_factories_hook(loop_name, tmp_path):
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "conftest.py").write_text(PYTEST_ASYNCIO_CONFTEST)
    (tmp_path / "test_on_loop.py").write_text(PYTEST_ASYNCIO_TESTS)
    env = child_env(WIRING_LOOP=loop_name, WIRING_EXPECTED=EXPECTED[loop_name])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert result.stdout.splitlines()[-1].startswith("2 passed"), report

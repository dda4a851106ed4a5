"""subprocess_exec / subprocess_shell and asyncio.create_subprocess_*: pipes, exit, signals."""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

PY = sys.executable
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

# A child that waits until killed.
SLEEPER = [PY, "-c", "import time; time.sleep(3600)"]


class RecordingProtocol(asyncio.SubprocessProtocol):
    """Records every event in order."""

    def __init__(self, loop):
        self.events = []
        self.data = {1: b"", 2: b""}
        self.transport = None
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        self.data[fd] += data
        self.events.append(("data", fd))

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited", self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


def run(loop, coro, timeout=30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_exec_communicate(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import sys; data = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(data.upper()); sys.stderr.write('err'); sys.exit(7)",
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
        )
        assert proc.pid > 0
        assert proc.returncode is None
        out, err = await proc.communicate(b"hello")
        return proc, out, err

    proc, out, err = run(loop, main())
    assert (out, err) == (b"HELLO", b"err")
    assert proc.returncode == 7


def test_exec_wait_without_pipes(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("true")
        assert proc.stdin is None and proc.stdout is None and proc.stderr is None
        return await proc.wait()

    assert run(loop, main()) == 0


def test_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2; exit 3", stdout=PIPE, stderr=PIPE
        )
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert run(loop, main()) == (b"out\n", b"err\n", 3)


def test_stream_20_mib_through_cat(loop):
    payload = os.urandom(20 * 1024 * 1024)

    async def main():
        proc = await asyncio.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        digest = hashlib.sha256()
        size = 0

        async def feed():
            view = memoryview(payload)
            for start in range(0, len(payload), 1 << 20):
                proc.stdin.write(view[start : start + (1 << 20)])
                await proc.stdin.drain()
            proc.stdin.close()
            await proc.stdin.wait_closed()

        async def consume():
            nonlocal size
            while chunk := await proc.stdout.read(1 << 16):
                digest.update(chunk)
                size += len(chunk)

        await asyncio.gather(feed(), consume())
        return await proc.wait(), size, digest.hexdigest()

    returncode, size, digest = run(loop, main(), timeout=60)
    assert returncode == 0
    assert size == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()


def test_protocol_event_order(loop):
    async def main():
        proto = None

        def factory():
            nonlocal proto
            proto = RecordingProtocol(loop)
            return proto

        transport, protocol = await loop.subprocess_exec(
            factory,
            PY,
            "-c",
            "import sys; sys.stdout.write('o'); sys.stdout.flush(); sys.stderr.write('e')",
        )
        assert protocol is proto
        assert isinstance(transport, asyncio.SubprocessTransport)
        assert proto.events == ["made"]
        assert transport.get_pid() > 0
        assert transport.get_extra_info("subprocess").pid == transport.get_pid()
        for fd in (0, 1, 2):
            assert isinstance(transport.get_pipe_transport(fd), asyncio.BaseTransport)
        assert transport.get_pipe_transport(3) is None
        transport.get_pipe_transport(0).close()
        await proto.done
        return transport, proto

    transport, proto = run(loop, main())
    events = proto.events
    assert events[0] == "made"
    assert events[-1] == ("lost", None)
    assert ("exited", 0) in events
    assert {e[1] for e in events if e[0] == "pipe_lost"} == {0, 1, 2}
    # Data of a pipe comes before that pipe's pipe_connection_lost.
    for fd in (1, 2):
        assert events.index(("data", fd)) < events.index(("pipe_lost", fd, None))
    assert proto.data == {1: b"o", 2: b"e"}
    assert transport.get_returncode() == 0
    transport.close()
    assert transport.is_closing()


def test_stderr_to_stdout(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import sys; sys.stdout.write('a'); sys.stdout.flush(); sys.stderr.write('b')",
            stdout=PIPE,
            stderr=STDOUT,
        )
        assert proc.stderr is None
        assert proc._transport.get_pipe_transport(2) is None
        out, err = await proc.communicate()
        return out, err

    assert run(loop, main()) == (b"ab", None)


def test_devnull_everywhere(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY,
            "-c",
            "import sys; assert sys.stdin.read() == ''; print('lost'); sys.stderr.write('x')",
            stdin=DEVNULL,
            stdout=DEVNULL,
            stderr=DEVNULL,
        )
        return await proc.communicate(), proc.returncode

    assert run(loop, main()) == ((None, None), 0)


def test_file_objects_and_fds(loop):
    with tempfile.TemporaryFile() as source, tempfile.TemporaryFile() as sink:
        source.write(b"from a file")
        source.seek(0)
        fd = os.dup(sink.fileno())
        try:

            async def main():
                proc = await asyncio.create_subprocess_exec(
                    PY,
                    "-c",
                    "import sys; d = sys.stdin.buffer.read(); "
                    "sys.stdout.buffer.write(d); sys.stderr.buffer.write(d[::-1])",
                    stdin=source,
                    stdout=fd,
                    stderr=sink,
                )
                return await proc.wait()

            assert run(loop, main()) == 0
        finally:
            os.close(fd)
        sink.seek(0)
        content = sink.read()
        assert b"from a file" in content and b"elif a morf" in content


def test_popen_keywords_pass_through(loop):
    with tempfile.TemporaryDirectory() as cwd:
        r, w = os.pipe()
        try:

            async def main():
                proc = await asyncio.create_subprocess_exec(
                    PY,
                    "-c",
                    "import os, sys; os.write(int(sys.argv[1]), b'fd'); "
                    "print(os.getcwd(), os.environ['FERRO'], os.getsid(0) == os.getpid())",
                    str(w),
                    stdout=PIPE,
                    cwd=cwd,
                    env={**os.environ, "FERRO": "loop"},
                    pass_fds=(w,),
                    start_new_session=True,
                )
                out, _ = await proc.communicate()
                return out.decode().split()

            words = run(loop, main())
            assert os.read(r, 10) == b"fd"
        finally:
            os.close(r)
            os.close(w)
    assert words == [os.path.realpath(cwd), "loop", "True"]


def test_missing_executable(loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/ferroloop-no-such-program")
        with pytest.raises(FileNotFoundError):
            await loop.subprocess_exec(
                asyncio.SubprocessProtocol, "/nonexistent/ferroloop-no-such-program"
            )

    run(loop, main())


def test_argument_checks(loop):
    async def main():
        bad_exec = [
            ({"universal_newlines": True}, "universal_newlines must be False"),
            ({"shell": True}, "shell must be False"),
            ({"bufsize": 1}, "bufsize must be 0"),
            ({"text": True}, "text must be False"),
            ({"encoding": "utf-8"}, "encoding must be None"),
            ({"errors": "strict"}, "errors must be None"),
        ]
        for kwargs, message in bad_exec:
            with pytest.raises(ValueError, match=message):
                await loop.subprocess_exec(asyncio.SubprocessProtocol, "true", **kwargs)
        bad_shell = [
            ({"universal_newlines": True}, "universal_newlines must be False"),
            ({"shell": False}, "shell must be True"),
            ({"bufsize": 1}, "bufsize must be 0"),
            ({"text": True}, "text must be False"),
            ({"encoding": "utf-8"}, "encoding must be None"),
            ({"errors": "strict"}, "errors must be None"),
        ]
        for kwargs, message in bad_shell:
            with pytest.raises(ValueError, match=message):
                await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs)
        with pytest.raises(ValueError, match="cmd must be a string"):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])

    run(loop, main())


def test_killed_by_signal(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import os; os.kill(os.getpid(), 9)")
        return await proc.wait()

    assert run(loop, main()) == -signal.SIGKILL


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("kill", -signal.SIGKILL),
        ("terminate", -signal.SIGTERM),
        ("send_signal", -signal.SIGUSR1),
    ],
)
def test_signals(loop, method, expected):
    async def main():
        proc = await asyncio.create_subprocess_exec(*SLEEPER, stdin=PIPE, stdout=PIPE)
        if method == "send_signal":
            proc.send_signal(signal.SIGUSR1)
        else:
            getattr(proc, method)()
        returncode = await proc.wait()
        await proc.communicate()
        return returncode

    assert run(loop, main()) == expected


def test_signal_after_exit_is_process_lookup_error(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(lambda: RecordingProtocol(loop), "true")
        await proto.done
        with pytest.raises(ProcessLookupError):
            transport.kill()
        with pytest.raises(ProcessLookupError):
            transport.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            transport.terminate()
        transport.close()

    run(loop, main())


def test_close_kills_running_child(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(lambda: RecordingProtocol(loop), *SLEEPER)
        assert transport.get_returncode() is None
        transport.close()
        assert transport.is_closing()
        returncode = await transport._wait()
        await proto.done
        return returncode, proto.events

    returncode, events = run(loop, main())
    assert returncode == -signal.SIGKILL
    assert events[-1] == ("lost", None)


def test_close_does_not_kill_a_finished_child(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), *SLEEPER, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL
        )
        popen = transport.get_extra_info("subprocess")
        popen.kill()
        popen.wait()  # reaped behind the loop's back
        killed = []
        popen.kill = lambda: killed.append(True)
        transport.close()
        returncode = await transport._wait()
        return killed, returncode

    killed, returncode = run(loop, main())
    assert killed == []
    # asyncio's threaded watcher reports 255 ("exit status already read"); ferroloop
    # reports what Popen.wait() read.
    assert isinstance(returncode, int)


def test_hundred_processes_in_a_row(loop):
    async def main():
        codes = []
        for _ in range(100):
            proc = await asyncio.create_subprocess_exec("true")
            codes.append(await proc.wait())
        return codes

    assert run(loop, main(), timeout=120) == [0] * 100


def test_concurrent_processes(loop):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(PY, "-c", f"print({i})", stdout=PIPE)
        out, _ = await proc.communicate()
        return int(out)

    async def main():
        return await asyncio.gather(*(one(i) for i in range(10)))

    assert run(loop, main()) == list(range(10))


def test_stdin_broken_pipe_on_drain(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", stdin=PIPE)
        await proc.wait()
        proc.stdin.write(b"x" * (1 << 20))
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await proc.stdin.drain()

    run(loop, main())


def test_cancel_during_creation_kills_child(loop):
    before = set(_children_of_this_process())

    async def main():
        task = asyncio.ensure_future(loop.subprocess_exec(asyncio.SubprocessProtocol, *SLEEPER))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main())

    def leftover():
        return set(_children_of_this_process()) - before

    # Let the killed child's pipes and exit be processed. (ferroloop spawns off the
    # loop's thread: the cancelled spawn may still be under way; closing the loop waits
    # for it and disposes of its child.)
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()
    deadline = time.monotonic() + 5
    while leftover() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leftover()


def _children_of_this_process():
    """Pids of this process's children that still exist (running or zombie)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(name))
    return found


def test_no_zombie_after_exit(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        return proc.pid

    pid = run(loop, main())
    assert pid not in _children_of_this_process()


def test_exit_watch_without_pidfd(loop, loop_kind, monkeypatch):
    """Old kernels have no pidfd_open: a waiting thread takes over."""

    def no_pidfd(pid, flags=0):
        raise OSError(errno.ENOSYS, "Function not implemented")

    if loop_kind == "ferroloop":
        # (asyncio 3.12+ chose its child watcher once, by probing pidfd_open.)
        monkeypatch.setattr(os, "pidfd_open", no_pidfd, raising=False)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "print('ok')", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    assert run(loop, main()) == (b"ok\n", 0)


def test_loop_closed_with_live_child(loop, loop_kind, caplog):
    if loop_kind == "asyncio" and sys.version_info >= (3, 12):
        pytest.skip("asyncio 3.12+ (PidfdChildWatcher) leaks the pidfd and never reaps the child")

    async def main():
        return await loop.subprocess_exec(
            asyncio.SubprocessProtocol, *SLEEPER, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL
        )

    transport, _ = run(loop, main())
    pid = transport.get_pid()
    loop.close()
    # The child outlives the loop; once it exits it is still reaped (no zombie).
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid in _children_of_this_process() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid not in _children_of_this_process()
    deadline = time.monotonic() + 5
    while "is closed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f"that handles pid {pid} is closed" in caplog.text
    # asyncio's transport warns when it is dropped unclosed.
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del transport
        gc.collect()


def _slow_exec():
    """A preexec_fn: the child takes 0.3 s before it execs (Popen waits for the exec)."""
    time.sleep(0.3)


def test_spawning_does_not_block_the_loop(loop, loop_kind):
    """Popen blocks until the child has exec'd. asyncio calls it on the loop's thread, so
    a slow fork or preexec_fn stops the loop; ferroloop calls it on a thread of its own
    (issue 11: blockbuster's "Blocking call to os.read"; MagicStack/uvloop#118)."""
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        ticking = loop.create_task(ticker())
        await asyncio.sleep(0.02)
        before = len(ticks)
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, *SLEEPER, preexec_fn=_slow_exec
        )
        during = len(ticks) - before
        ticking.cancel()
        transport.close()
        await transport._wait()
        return during

    during = run(loop, main())
    if loop_kind == "asyncio":
        assert during <= 1  # asyncio's loop stood still for the whole spawn
    else:
        assert during >= 10  # 0.3 s of 10 ms ticks went on meanwhile


def test_cancel_during_a_slow_spawn_leaves_no_child(loop):
    before = set(_children_of_this_process())

    async def main():
        task = loop.create_task(
            loop.subprocess_exec(asyncio.SubprocessProtocol, *SLEEPER, preexec_fn=_slow_exec)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # the spawn ends meanwhile (on ferroloop, off the loop)

    run(loop, main())
    deadline = time.monotonic() + 5
    while set(_children_of_this_process()) - before and time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(0.01))
    assert not set(_children_of_this_process()) - before


@pytest.mark.asyncio_since((3, 14))  # before, asyncio's wait() also waited for the pipes
def test_wait_returns_at_exit_though_a_grandchild_keeps_the_pipes_open(loop):
    # The child starts a grandchild that inherits its stdin and stdout, says "ready" and
    # lives until its stdin reaches EOF.
    grandchild = "import sys; sys.stdout.write('ready'); sys.stdout.flush(); sys.stdin.read()"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", child, stdin=PIPE, stdout=PIPE)
        try:
            assert await proc.stdout.readexactly(5) == b"ready"
            waiting = asyncio.ensure_future(proc.wait())
            await asyncio.sleep(0)
            proc.kill()
            assert await asyncio.wait_for(waiting, 10) == -signal.SIGKILL
            assert proc.returncode == -signal.SIGKILL
        finally:
            proc.stdin.close()  # the grandchild exits
            await proc.stdout.read()
        return await proc.wait()

    assert run(loop, main()) == -signal.SIGKILL

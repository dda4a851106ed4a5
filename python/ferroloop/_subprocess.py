"""Subprocesses: subprocess_exec / subprocess_shell and their transport.

The child is spawned by `subprocess.Popen`, so every Popen option works (cwd, env,
pass_fds, start_new_session, process_group, user, group, extra_groups, umask,
preexec_fn, ...). Popen runs on a short-lived thread of its own, never on the loop's: it
forks and then blocks in `os.read` until the child has exec'd (or failed to), which
takes as long as a large process's fork or a slow `preexec_fn` (asyncio and uvloop block
the loop for all of it; MagicStack/uvloop#118; issue 11). A child whose spawn was
cancelled meanwhile is killed and reaped there. Its pipes become our pipe transports
(`connect_read_pipe` / `connect_write_pipe`). Its exit is watched by a pidfd
(`os.pidfd_open`) registered with the loop's poller: when the pidfd becomes readable the
child is reaped with `os.waitpid(pid, WNOHANG)`. No thread, no SIGCHLD handler, and no
other child of the process is touched. Where pidfds are unavailable (Linux < 5.3,
seccomp) a thread per child waits in `os.waitpid(pid, 0)` instead.

The protocol sees asyncio's order of events: `connection_made` (after the pipe
transports are connected), `pipe_data_received`, `pipe_connection_lost`,
`process_exited`, and `connection_lost` once the process exited and every pipe closed.
Closing the loop while a child still runs hands its pidfd over to a thread that reaps
the child when it exits and logs asyncio's "Loop ... that handles pid ... is closed".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import threading
import warnings

logger = logging.getLogger("asyncio")


def _check_binary_unbuffered(bufsize, text, encoding, errors):
    """asyncio's ValueErrors for the Popen options its pipes do not support."""
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


def _exitcode(status):
    """The returncode Popen would report for a wait status."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        # A status we do not understand: report it as is (asyncio does the same).
        return status


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


class _PipeEnd(asyncio.BaseProtocol):
    """The protocol of the child's stdin pipe transport: forwards to the subprocess
    transport, and flow control to the subprocess protocol."""

    def __init__(self, proc, fd):
        self.proc = proc
        self.fd = fd
        self.pipe = None
        self.disconnected = False

    def connection_made(self, transport):
        self.pipe = transport

    def __repr__(self):
        return f"<{type(self).__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_lost(self, exc):
        self.disconnected = True
        self.proc._pipe_connection_lost(self.fd, exc)
        self.proc = None

    def pause_writing(self):
        self.proc._protocol.pause_writing()

    def resume_writing(self):
        self.proc._protocol.resume_writing()


class _ReadPipeEnd(_PipeEnd, asyncio.Protocol):
    """The protocol of the child's stdout/stderr pipe transports. For a
    `SubprocessChunkProtocol` it carries the pipe's splitter: the pipe transport reads
    into it and the frames are cut in Rust (data_received is not called)."""

    def __init__(self, proc, fd):
        super().__init__(proc, fd)
        from .framing import SubprocessChunkProtocol

        if isinstance(proc._protocol, SubprocessChunkProtocol):
            self._ferroloop_splitter = proc._protocol._native_splitter(fd)

    def data_received(self, data):
        self.proc._pipe_data_received(self.fd, data)

    def _framing_failed(self, exc):
        """A frame the pipe transport delivered failed: the subprocess protocol's fatal
        error of that pipe, as when its pipe_data_received fails."""
        proc = self.proc
        if proc is not None and proc._protocol is not None:
            proc._protocol._fail(self.fd, exc)


def _wait_in_thread(loop, transport, proc, pid, on_closed_loop_only):
    """Blocks in waitpid(pid, 0); then reports to the loop, or logs if it is closed."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Reaped elsewhere (Popen.wait()/poll() in user code).
        returncode = None
    else:
        returncode = _exitcode(status)
        if proc.returncode is None:
            proc.returncode = returncode
        if loop.get_debug():
            logger.debug("process %s exited with returncode %s", pid, returncode)
    if not on_closed_loop_only:
        try:
            loop.call_soon_threadsafe(transport._child_reaped, returncode)
            return
        except RuntimeError:  # the loop was closed meanwhile
            pass
    logger.warning("Loop %r that handles pid %r is closed", loop, pid)


class _Spawn:
    """One `subprocess.Popen(args, **popen_kwargs)` on a thread of its own, while the loop
    runs on. The loop keeps the spawn (in `_spawns`) until the child is handed to the
    awaiting task; a child nobody will own (the task was cancelled, or the loop closed
    first) is killed and reaped."""

    def __init__(self, loop, args, popen_kwargs):
        self.loop = loop
        self.future = loop.create_future()
        # (proc, exception) from the thread, until the loop takes it; guarded by `lock`.
        self.outcome = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, args=(args, popen_kwargs), name="ferroloop-spawn", daemon=True
        )

    def _run(self, args, popen_kwargs):
        try:
            outcome = (subprocess.Popen(args, **popen_kwargs), None)
        except BaseException as exc:  # handed to the awaiting task, as asyncio raises it
            outcome = (None, exc)
        with self.lock:
            self.outcome = outcome
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop closed meanwhile
            self.abandon()

    def _take(self):
        with self.lock:
            outcome, self.outcome = self.outcome, None
        return outcome

    def _deliver(self):
        self.loop._spawns.discard(self)
        outcome = self._take()
        if outcome is None:
            return
        proc, exc = outcome
        if self.future.cancelled():
            if proc is not None:
                threading.Thread(
                    target=_discard_child, args=(proc,), name="ferroloop-discard", daemon=True
                ).start()
        elif exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(proc)

    def abandon(self):
        """Kills and reaps the child, if there is one the loop has not taken."""
        outcome = self._take()
        if outcome is not None and outcome[0] is not None:
            _discard_child(outcome[0])


async def _popen_off_loop(loop, args, popen_kwargs):
    """The spawned `subprocess.Popen`; Popen's exception, if any, is raised here."""
    spawn = _Spawn(loop, args, popen_kwargs)
    loop._spawns.add(spawn)
    spawn.thread.start()
    return await spawn.future


def _discard_child(proc):
    """Kills and reaps a child whose spawn was cancelled, and closes its pipes."""
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


class SubprocessTransport(asyncio.SubprocessTransport):
    """A child process with its stdin/stdout/stderr pipe transports."""

    __slots__ = (
        "_closed",
        "_protocol",
        "_loop",
        "_proc",
        "_pid",
        "_returncode",
        "_exit_waiters",
        "_pending_calls",
        "_pipes",
        "_finished",
        "_pidfd",
        "__weakref__",
        "__dict__",
    )

    def __init__(
        self,
        loop,
        protocol,
        proc,
        program,
        stdin,
        stdout,
        stderr,
        waiter=None,
        extra=None,
    ):
        super().__init__(extra)
        self._closed = False
        self._protocol = protocol
        self._loop = loop
        self._proc = proc
        self._pid = None
        self._returncode = None
        # Futures of _wait() callers, resolved when the process exits; None after that.
        self._exit_waiters = set()
        # Protocol calls made before connection_made, replayed after it.
        self._pending_calls = collections.deque()
        # fd -> pipe protocol (None until its transport is connected).
        self._pipes = {}
        self._finished = False
        self._pidfd = None

        if stdin == subprocess.PIPE:
            self._pipes[0] = None
        if stdout == subprocess.PIPE:
            self._pipes[1] = None
        if stderr == subprocess.PIPE:
            self._pipes[2] = None

        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc

        if loop.get_debug():
            logger.debug("process %r created: pid %s", program, self._pid)

        try:
            self._watch_exit()
        except BaseException:
            self.close()
            raise
        loop.create_task(self._connect_pipes(waiter))

    def __repr__(self):
        info = [type(self).__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")

        stdin = self._pipes.get(0)
        if stdin is not None:
            info.append(f"stdin={stdin.pipe}")
        stdout = self._pipes.get(1)
        stderr = self._pipes.get(2)
        if stdout is not None and stderr is stdout:
            info.append(f"stdout=stderr={stdout.pipe}")
        else:
            if stdout is not None:
                info.append(f"stdout={stdout.pipe}")
            if stderr is not None:
                info.append(f"stderr={stderr.pipe}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if not getattr(self, "_closed", True):
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    # -- watching the child's exit -------------------------------------------------

    def _watch_exit(self):
        try:
            pidfd = os.pidfd_open(self._pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel or Python, or a seccomp filter): a waiting thread.
            threading.Thread(
                target=_wait_in_thread,
                args=(self._loop, self, self._proc, self._pid, False),
                name=f"ferroloop-waitpid-{self._pid}",
                daemon=True,
            ).start()
            return
        try:
            self._loop._add_reader(pidfd, self._pidfd_ready)
        except BaseException:
            os.close(pidfd)
            raise
        self._pidfd = pidfd
        self._loop._watched_children[self._pid] = self

    def _stop_watching(self):
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is None:
            return
        loop = self._loop
        loop._remove_reader(pidfd)
        loop._watched_children.pop(self._pid, None)
        os.close(pidfd)

    def _pidfd_ready(self):
        if self._pidfd is None:
            return
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped elsewhere: Popen.wait()/poll() (send_signal() polls too).
            returncode = None
        else:
            if pid == 0:
                # Readable but not reapable yet (a thread-group leader that exited
                # before its other threads): look again shortly rather than spin.
                self._loop._remove_reader(self._pidfd)
                self._loop.call_later(0.01, self._rewatch)
                return
            returncode = _exitcode(status)
            if self._proc.returncode is None:
                # Now, so that Popen never waits for a pid that is already reaped.
                self._proc.returncode = returncode
        self._stop_watching()
        if returncode is not None and self._loop.get_debug():
            logger.debug("process %s exited with returncode %s", self._pid, returncode)
        self._child_reaped(returncode)

    def _rewatch(self):
        if self._pidfd is not None and not self._loop.is_closed():
            self._loop._add_reader(self._pidfd, self._pidfd_ready)

    def _child_reaped(self, returncode):
        if returncode is None:
            returncode = self._proc.returncode if self._proc is not None else None
            if returncode is None:
                logger.warning(
                    "child process pid %d exit status already read:  will report returncode 255",
                    self._pid,
                )
                returncode = 255
        # One more iteration, as asyncio's child watchers do, so that callbacks already
        # scheduled (pipe data) run first.
        self._loop.call_soon(self._process_exited, returncode)

    def _hand_over_to_thread(self):
        """The loop closes while the child runs: a thread reaps it when it exits.

        The thread does not keep the transport alive: dropped unclosed, it warns and
        kills the child (ResourceWarning "unclosed transport"), as asyncio's does.
        """
        loop = self._loop
        self._stop_watching()
        threading.Thread(
            target=_wait_in_thread,
            args=(loop, None, self._proc, self._pid, True),
            name=f"ferroloop-waitpid-{self._pid}",
            daemon=True,
        ).start()

    # -- public API ----------------------------------------------------------------

    def set_protocol(self, protocol):
        """Switches to another protocol."""
        self._protocol = protocol

    def get_protocol(self):
        """The current protocol."""
        return self._protocol

    def is_closing(self):
        """True once close() was called."""
        return self._closed

    def close(self):
        """Closes the pipes and kills the child if it still runs."""
        if self._closed:
            return
        self._closed = True

        for proto in self._pipes.values():
            if proto is None:
                continue
            proto.pipe.close()

        if (
            self._proc is not None
            # The child has not exited as far as the transport knows...
            and self._returncode is None
            # ...and has not exited unnoticed either.
            and self._proc.poll() is None
        ):
            if self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass

    def get_pid(self):
        """The child's pid."""
        return self._pid

    def get_returncode(self):
        """The child's returncode, or None while it runs (or its exit is unreported)."""
        return self._returncode

    def get_pipe_transport(self, fd):
        """The transport of the child's pipe `fd` (0, 1 or 2), or None."""
        if fd in self._pipes:
            return self._pipes[fd].pipe
        return None

    def _check_proc(self):
        if self._proc is None:
            raise ProcessLookupError()

    def send_signal(self, signal):
        """Sends `signal` to the child."""
        self._check_proc()
        self._proc.send_signal(signal)

    def terminate(self):
        """Sends SIGTERM to the child."""
        self._check_proc()
        self._proc.terminate()

    def kill(self):
        """Sends SIGKILL to the child."""
        self._check_proc()
        self._proc.kill()

    # -- plumbing ------------------------------------------------------------------

    async def _connect_pipes(self, waiter):
        # fds whose pipe object was handed to connect_*_pipe (which then owns it).
        handed = set()
        try:
            proc = self._proc
            loop = self._loop

            if proc.stdin is not None:
                handed.add(0)
                _, pipe = await loop.connect_write_pipe(lambda: _PipeEnd(self, 0), proc.stdin)
                self._pipes[0] = pipe

            if proc.stdout is not None:
                handed.add(1)
                _, pipe = await loop.connect_read_pipe(lambda: _ReadPipeEnd(self, 1), proc.stdout)
                self._pipes[1] = pipe

            if proc.stderr is not None:
                handed.add(2)
                _, pipe = await loop.connect_read_pipe(lambda: _ReadPipeEnd(self, 2), proc.stderr)
                self._pipes[2] = pipe

            loop.call_soon(self._protocol.connection_made, self)
            for callback, data in self._pending_calls:
                loop.call_soon(callback, *data)
            self._pending_calls = None
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # A pipe left without a transport would keep the transport from finishing,
            # and _wait() from ever returning (asyncio hangs there): forget it, and close
            # it unless connect_*_pipe took it over.
            for fd, pipe in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
                if fd in self._pipes and self._pipes[fd] is None:
                    del self._pipes[fd]
                    if fd not in handed and pipe is not None:
                        pipe.close()
            # The caller closes the transport and waits for it; the protocol never saw
            # connection_made, so it sees nothing else either.
            self._protocol = asyncio.SubprocessProtocol()
            self._pending_calls = None
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    def _call(self, callback, *data):
        if self._pending_calls is not None:
            self._pending_calls.append((callback, data))
        else:
            self._loop.call_soon(callback, *data)

    def _pipe_connection_lost(self, fd, exc):
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _pipe_data_received(self, fd, data):
        self._call(self._protocol.pipe_data_received, fd, data)

    def _process_exited(self, returncode):
        if self._returncode is not None or self._protocol is None:
            return
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        if self._proc.returncode is None:
            self._proc.returncode = returncode
        self._call(self._protocol.process_exited)
        self._try_finish()
        self._wake_exit_waiters()

    def _wake_exit_waiters(self):
        waiters, self._exit_waiters = self._exit_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(self._returncode)

    async def _wait(self):
        """Waits until the process exited; returns the returncode. (Process.wait() awaits
        this.) As in asyncio 3.14, the process's exit is enough: before, asyncio also
        waited for its pipes to close, forever if a grandchild kept them open."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.add(waiter)
        try:
            return await waiter
        finally:
            if self._exit_waiters is not None:
                self._exit_waiters.discard(waiter)

    def _try_finish(self):
        if self._finished or self._returncode is None:
            return
        if all(p is not None and p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._wake_exit_waiters()  # normally done already, when the process exited
            self._loop = None
            self._proc = None
            self._protocol = None


class SubprocessMixin:
    """subprocess_exec / subprocess_shell."""

    def _init_subprocesses(self):
        # pid -> SubprocessTransport whose exit is watched by a pidfd of this loop.
        self._watched_children = {}
        # Popen calls under way on their threads (_Spawn), until their child is taken.
        self._spawns = set()

    def _close_subprocesses(self):
        for transport in list(self._watched_children.values()):
            transport._hand_over_to_thread()
        self._watched_children.clear()

    def _abandon_spawns(self):
        """At close, once no callback can run any more: waits for the Popen calls still
        under way and kills and reaps the children no task will take."""
        spawns, self._spawns = self._spawns, set()
        for spawn in spawns:
            spawn.thread.join()
            spawn.abandon()

    def _log_subprocess(self, msg, stdin, stdout, stderr):
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        logger.debug(" ".join(info))

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        proc = await _popen_off_loop(
            self,
            args,
            dict(
                shell=shell,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                universal_newlines=False,
                bufsize=bufsize,
                **kwargs,
            ),
        )
        waiter = self.create_future()
        program = args if isinstance(args, (bytes, str)) else args[0]
        transport = SubprocessTransport(
            self, protocol, proc, program, stdin, stdout, stderr, waiter=waiter, extra=extra
        )
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Runs `cmd` through the shell; returns `(transport, protocol)`."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_binary_unbuffered(bufsize, text, encoding, errors)
        return await self._spawn(
            protocol_factory, cmd, True, f"run shell command {cmd!r}", stdin, stdout, stderr, kwargs
        )

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Runs `program` with `args`; returns `(transport, protocol)`."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_binary_unbuffered(bufsize, text, encoding, errors)

        return await self._spawn(
            protocol_factory,
            (program, *args),
            False,
            f"execute program {program!r}",
            stdin,
            stdout,
            stderr,
            kwargs,
        )

    async def _spawn(self, protocol_factory, args, shell, what, stdin, stdout, stderr, kwargs):
        """What subprocess_shell and subprocess_exec share once their arguments are
        checked. `what` names the child in debug logs; the arguments are not logged: they
        may hold secrets and be long."""
        protocol = protocol_factory()
        debug = self.get_debug()
        if debug:
            self._log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, args, shell, stdin, stdout, stderr, 0, **kwargs
        )
        if debug and self.get_debug():
            logger.info("%s: %r", what, transport)
        return transport, protocol

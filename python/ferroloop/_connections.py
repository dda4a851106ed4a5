"""Opening stream connections and servers: create_connection, create_server and friends.

Cold, argument-heavy orchestration: check the arguments exactly as asyncio does, resolve,
race the candidate addresses (happy eyeballs), bind, then hand the connected socket to the
Rust stream transport (`make_socket_transport`); with `ssl=`, TLS on top of it (`_tls.py`).
"""

from __future__ import annotations

import asyncio
import collections.abc
import errno
import itertools
import logging
import os
import socket
import stat
import sys

from ._datagram import _numeric_info
from ._offload import run_off_loop
from ._server import Server
from ._sockets import _reject_ssl_socket
from ._stream import make_socket_transport
from ._tls import make_ssl_transport

logger = logging.getLogger("asyncio")

# Python 3.13 quotes the whole OSError (with its errno) in bind error messages; older
# versions quote only its strerror.
_QUOTE_WHOLE_BIND_ERROR = sys.version_info >= (3, 13)

# Python 3.13 added cleanup_socket (default True): closing a Unix server removes its socket
# file. Older versions never remove it; ferroloop follows the running version by default.
_CLEANUP_UNIX_SOCKETS_BY_DEFAULT = sys.version_info >= (3, 13)


def _bind_error_detail(err):
    if _QUOTE_WHOLE_BIND_ERROR or not err.strerror:
        return str(err).lower()
    return err.strerror.lower()


def _check_tls_timeouts(with_tls, ssl_handshake_timeout, ssl_shutdown_timeout):
    """asyncio's ValueError for a TLS timeout given without TLS. Callers decide what
    `with_tls` means, as asyncio does (`bool(ssl)`, or `ssl is not None` for create_server).
    """
    if with_tls:
        return
    if ssl_handshake_timeout is not None:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _is_stream_socket(sock):
    return sock.type == socket.SOCK_STREAM


def _unix_path_or_sock(path, sock, missing):
    """`os.fspath(path)`, or None when the caller's Unix stream `sock` is to be used;
    asyncio's ValueErrors otherwise (`missing` is the message when neither is given)."""
    if path is not None:
        if sock is not None:
            raise ValueError("path and sock can not be specified at the same time")
        return os.fspath(path)
    if sock is None:
        raise ValueError(missing)
    if sock.family != socket.AF_UNIX or not _is_stream_socket(sock):
        raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
    return None


def _set_reuse_port(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None


def _interleave_by_family(infos, first_family_count):
    """Reorder addrinfos so families alternate, the first family leading with
    `first_family_count` entries (RFC 8305's "First Address Family Count")."""
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    groups = list(by_family.values())
    if not groups:
        return []
    head = groups[0][: max(first_family_count - 1, 0)]
    groups[0] = groups[0][len(head) :]
    rest = [info for row in itertools.zip_longest(*groups) for info in row if info is not None]
    return head + rest


def _combined_connect_error(errors, all_errors):
    """The exception create_connection raises when every address failed."""
    if all_errors:
        return ExceptionGroup("create_connection failed", errors)
    if len(errors) == 1:
        return errors[0]
    first = str(errors[0])
    if all(str(e) == first for e in errors):
        return errors[0]
    return OSError("Multiple exceptions: {}".format(", ".join(str(e) for e in errors)))


def _close_if_connected(task):
    """Done-callback of a losing connection attempt: close its socket if it connected."""
    if task.cancelled():
        return
    if task.exception() is None:
        task.result().close()


class ConnectionsMixin:
    """create_connection, create_server, their Unix variants and connect_accepted_socket."""

    # -- client side ----------------------------------------------------------------------

    async def _resolve_stream(self, host, port, family, proto, flags, *extra):
        # A numeric host is used as given, without getaddrinfo, as asyncio does: an
        # out-of-range port then fails in connect() instead of wrapping to 16 bits.
        info = _numeric_info(host, port, family, socket.SOCK_STREAM, proto, *extra)
        if info is not None:
            return [info]
        infos = await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        return infos

    async def _open_one(self, info, local_infos, errors):
        """Create, bind and connect one socket for `info`; OSErrors go to `errors` too."""
        family, type_, proto, _, address = info
        sock = None
        bind_errors = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None:
                bind_errors = []
                for local_family, _, _, _, local_address in local_infos:
                    if local_family != family:
                        continue
                    try:
                        sock.bind(local_address)
                        break
                    except OSError as exc:
                        message = (
                            f"error while attempting to bind on address {local_address!r}: "
                            f"{_bind_error_detail(exc)}"
                        )
                        bind_errors.append(OSError(exc.errno, message))
                else:
                    if bind_errors:
                        errors.extend(bind_errors[:-1])
                        raise bind_errors[-1]
                    raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            # The error's traceback keeps this frame: no list of errors may stay in it
            # (a reference cycle through the exception, as CPython's gh-124859).
            errors = bind_errors = None

    async def _race(self, infos, local_infos, delay, errors_by_attempt):
        """Happy eyeballs: start the next attempt when one fails or `delay` seconds pass;
        the first to connect wins, the others are cancelled and their sockets closed."""
        attempts = []
        winner = None
        try:
            pending = set()
            upcoming = iter(infos)
            exhausted = False
            while winner is None:
                if not exhausted:
                    info = next(upcoming, None)
                    if info is None:
                        exhausted = True
                    else:
                        errors = []
                        errors_by_attempt.append(errors)
                        task = self.create_task(self._open_one(info, local_infos, errors))
                        attempts.append(task)
                        pending.add(task)
                if not pending:
                    break
                done, pending = await asyncio.wait(
                    pending,
                    timeout=None if exhausted else delay,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                # In start order, so that simultaneous winners resolve deterministically.
                for task in (t for t in attempts if t in done):
                    if task.cancelled():
                        continue
                    exc = task.exception()
                    if exc is None:
                        if winner is None:
                            winner = task
                    elif not isinstance(exc, OSError):
                        raise exc
            return None if winner is None else winner.result()
        finally:
            losers = [task for task in attempts if task is not winner]
            for task in losers:
                if task.done():
                    # Now, not through a done callback: a queued callback would keep the
                    # task, and with it its exception, alive after create_connection raised.
                    _close_if_connected(task)
                else:
                    task.cancel()
                    task.add_done_callback(_close_if_connected)
            unfinished = [task for task in losers if not task.done()]
            if unfinished:
                try:
                    await asyncio.wait(unfinished)
                except BaseException:
                    if winner is not None:
                        winner.result().close()
                    raise

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        """Opens a TCP connection to host:port (or wraps the connected `sock`) and returns
        `(transport, protocol)` once `protocol.connection_made` has run."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl and not host:
            raise ValueError("You must set server_hostname when using ssl without a host")
        _check_tls_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _reject_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1
        resolve = host is not None or port is not None
        if resolve:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
        elif sock is None:
            raise ValueError("host and port was not specified and no sock specified")
        elif not _is_stream_socket(sock):
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl and server_hostname is None:
            server_hostname = host

        if resolve:
            infos = await self._resolve_stream(host, port, family, proto, flags)
            local_infos = None
            if local_addr is not None:
                local_host, local_port = local_addr[:2]
                local_infos = await self._resolve_stream(
                    local_host, local_port, family, proto, flags, *local_addr[2:]
                )
            if interleave:
                infos = _interleave_by_family(infos, interleave)
            errors_by_attempt = []
            if happy_eyeballs_delay is None:
                for info in infos:
                    errors = []
                    errors_by_attempt.append(errors)
                    try:
                        sock = await self._open_one(info, local_infos, errors)
                        break
                    except OSError:
                        continue
            else:
                sock = await self._race(infos, local_infos, happy_eyeballs_delay, errors_by_attempt)
            if sock is None:
                errors = [exc for errors in errors_by_attempt for exc in errors]
                errors_by_attempt = None
                try:
                    raise _combined_connect_error(errors, all_errors)
                finally:
                    errors = None

        transport, protocol = await self._wrap_connected(
            sock,
            protocol_factory,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            logger.debug(
                "%r connected to %s:%r: (%r, %r)",
                transport.get_extra_info("socket"),
                host,
                port,
                transport,
                protocol,
            )
        return transport, protocol

    async def _wrap_connected(
        self,
        sock,
        protocol_factory,
        *,
        ssl=None,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """A stream transport over connected `sock` (TLS when `ssl` is set), returned
        after connection_made ran (for TLS: after the handshake completed)."""
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            transport = make_ssl_transport(
                self,
                sock,
                protocol,
                None if isinstance(ssl, bool) else ssl,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = make_socket_transport(self, sock, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        finally:
            waiter = None
        return transport, protocol

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Opens a Unix stream connection to `path` (or wraps the connected `sock`)."""
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            _check_tls_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        path = _unix_path_or_sock(path, sock, "no path and sock were specified")

        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        return await self._wrap_connected(
            sock,
            protocol_factory,
            ssl=ssl,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wraps a socket accepted outside the loop into a transport and protocol."""
        if not _is_stream_socket(sock):
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_tls_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        _reject_ssl_socket(sock)
        transport, protocol = await self._wrap_connected(
            sock,
            protocol_factory,
            ssl=ssl,
            server_side=True,
            server_hostname="",
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            logger.debug(
                "%r handled: (%r, %r)", transport.get_extra_info("socket"), transport, protocol
            )
        return transport, protocol

    # -- server side ----------------------------------------------------------------------

    async def _resolve_listen(self, host, port, family, flags):
        # As in _resolve_stream: a numeric host binds the port as given (bind() refuses
        # one out of range; a float port is truncated, as asyncio's int(port) does).
        info = _numeric_info(host, port, family, socket.SOCK_STREAM, 0)
        if info is not None:
            return [info]
        infos = await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, flags=flags
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        keep_alive=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        """A TCP server listening on host:port (`host` may be a list of hosts) or on the
        listening-ready `sock`, which is used as-is."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_tls_timeouts(ssl is not None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _reject_ssl_socket(sock)
        bind = host is not None or port is not None
        if bind:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
        elif sock is None:
            raise ValueError("Neither host/port nor sock were specified")
        elif not _is_stream_socket(sock):
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        if bind:
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            resolved = await asyncio.gather(
                *(self._resolve_listen(h, port, family, flags) for h in hosts)
            )
            infos = set(itertools.chain.from_iterable(resolved))
            sockets = self._bind_listeners(infos, reuse_address, reuse_port, keep_alive)
        else:
            sockets = [sock]

        for listener in sockets:
            listener.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            backlog,
            None,
            ssl,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    def _bind_listeners(self, infos, reuse_address, reuse_port, keep_alive):
        sockets = []
        completed = False
        try:
            for af, socktype, proto, _, address in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    # Most likely a family/type/protocol combination the host lacks.
                    if self.get_debug():
                        logger.warning(
                            "create_server() failed to create socket.socket(%r, %r, %r)",
                            af,
                            socktype,
                            proto,
                            exc_info=True,
                        )
                    continue
                sockets.append(sock)
                if reuse_address:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                if reuse_port:
                    _set_reuse_port(sock)
                if keep_alive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                if af == getattr(socket, "AF_INET6", None) and hasattr(socket, "IPPROTO_IPV6"):
                    # One socket per family: no dual-stack IPv6 socket also taking IPv4.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                try:
                    sock.bind(address)
                except OSError as err:
                    message = (
                        f"error while attempting to bind on address {address!r}: "
                        f"{_bind_error_detail(err)}"
                    )
                    if err.errno == errno.EADDRNOTAVAIL:
                        # The family is probably not enabled on this host (bpo-30945).
                        sockets.pop()
                        sock.close()
                        if self.get_debug():
                            logger.warning(message)
                        continue
                    raise OSError(err.errno, message) from None
            if not sockets:
                addresses = [info[4] for info in infos]
                raise OSError(f"could not bind on any address out of {addresses!r}")
            completed = True
        finally:
            if not completed:
                for sock in sockets:
                    sock.close()
        return sockets

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        cleanup_socket=None,
    ):
        """A Unix stream server on `path` (a stale socket file there is replaced) or on
        `sock`. With `cleanup_socket`, closing the server removes the socket file if it
        is still ours."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_tls_timeouts(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        path = _unix_path_or_sock(path, sock, "path was not specified, and no sock specified")

        if cleanup_socket is None:
            cleanup_socket = _CLEANUP_UNIX_SOCKETS_BY_DEFAULT
        unix_paths = {}
        if path is not None or cleanup_socket:
            # The stale-socket check, the bind and the stat for cleanup touch the
            # filesystem: not on the loop thread.
            discard = _close_listener if path is not None else None
            sock, identity = await run_off_loop(
                self, _unix_listener, path, sock, cleanup_socket, discard=discard
            )
            if identity is not None:
                unix_paths[sock] = identity
        sock.setblocking(False)
        server = Server(
            self,
            [sock],
            protocol_factory,
            backlog,
            unix_paths,
            ssl,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server


def _unix_listener(path, sock, cleanup):
    """`(sock, identity)`: a new socket bound at `path` (see `_bind_unix`) unless `sock` is
    given; with `cleanup`, `identity` is the (path, inode) of its socket file, else None.
    Makes blocking filesystem calls: run off the loop thread."""
    if path is not None:
        sock = _bind_unix(path)
    try:
        if not cleanup:
            return sock, None
        bound = sock.getsockname()
        if not bound or bound[0] in (0, "\x00"):  # unbound or an abstract socket
            return sock, None
        try:
            return sock, (bound, os.stat(bound).st_ino)
        except FileNotFoundError:
            return sock, None
    except BaseException:
        if path is not None:
            sock.close()
        raise


def _close_listener(listener):
    """Closes the socket of a `_unix_listener` result nobody took."""
    listener[0].close()


def _bind_unix(path):
    """A new AF_UNIX stream socket bound to `path`, replacing a stale socket file."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if path and path[0] not in (0, "\x00"):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            # The directory may only allow creating the socket.
            logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock

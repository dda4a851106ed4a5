"""Expected failures of the upstream suites (compat/upstream/run.py): {suite: {test: why}}.

Only failures that asyncio's own loop has too, in the same run (this machine's
environment), belong here, never a ferroloop-only difference; each entry says why it
fails. The runner runs them apart from the rest of the suite (what they leave behind,
such as sockets for the garbage collector, would fail later tests) and checks that each
still fails on both loops: the list only ever shrinks.
"""

# These machines' /etc/hosts maps localhost to 127.0.0.1 only (no ::1 line).
NO_IPV6_LOCALHOST = (
    "environment: 'localhost' has no IPv6 address here, so the test's IPv6 server or "
    "client on ('localhost', 0) cannot be made (socket.gaierror / Name or service not known)"
)
NO_IPV6_LOCALHOST_DUALSTACK = (
    "environment: 'localhost' has no IPv6 address here, so the dual-stack client connects "
    "from ::ffff:127.0.0.1, not from the ::1 the test expects"
)
ONE_LOCALHOST_ADDRESS = (
    "environment: 'localhost' resolves to one address here (127.0.0.1), so one attempt "
    "fails with a ConnectionRefusedError where the test expects an ExceptionGroup of two"
)

# These machines run the suites as root.
RUN_AS_ROOT = (
    "environment: run as root, who reads a file or directory whatever its mode, so chmod 000 "
    "does not make the server answer 403"
)

_TCP = "tests/test_sockets.py::TestTCPStream::"

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "anyio": {
        **{
            _TCP + test: NO_IPV6_LOCALHOST
            for test in (
                "test_aclose_forcefully[asyncio-ipv6]",
                "test_aclose_in_cancelled_scope_raises_cancelled_exc[asyncio-ipv6]",
                "test_cancelled_receive_pauses_reading[ipv6-asyncio]",
                "test_cancelled_send_does_not_send_the_next_one[asyncio-ipv6]",
                "test_close_during_receive[asyncio-ipv6]",
                "test_close_during_send[asyncio-ipv6]",
                "test_concurrent_aclose_forcefully_closes_socket[asyncio-ipv6]",
                "test_concurrent_receive[asyncio-ipv6]",
                "test_concurrent_send[asyncio-ipv6]",
                "test_connect_tcp_closes_winner_on_outer_cancellation[asyncio-ipv6]",
                "test_connect_tcp_with_local_port[asyncio-ipv6]",
                "test_connect_tcp_with_tls[asyncio-ipv6]",
                "test_connect_tcp_with_tls_cert_check_fail[asyncio-ipv6]",
                "test_connect_tcp_with_tls_unicode_hostname[asyncio-ipv6]",
                "test_extra_attributes[asyncio-ipv6]",
                "test_from_socket[asyncio-ipv6-fileno]",
                "test_from_socket[asyncio-ipv6-sock]",
                "test_happy_eyeballs[asyncio-ipv6]",
                "test_iterate[asyncio-ipv6]",
                "test_receive_after_close[asyncio-ipv6]",
                "test_receive_after_peer_closed[asyncio-ipv6]",
                "test_receive_exception_cause_preserved[asyncio-ipv6]",
                "test_receive_invalid_max_bytes[asyncio-ipv6--1]",
                "test_receive_invalid_max_bytes[asyncio-ipv6-0]",
                "test_receive_timeout[asyncio-ipv6]",
                "test_reset_during_send[asyncio-ipv6]",
                "test_send_after_close[asyncio-ipv6]",
                "test_send_after_peer_closed[asyncio-ipv6]",
                "test_send_eof[asyncio-ipv6]",
                "test_send_exception_cause_preserved[asyncio-ipv6]",
                "test_send_large_buffer[asyncio-ipv6]",
                "test_send_receive[asyncio-ipv6]",
                "test_socket_options[asyncio-ipv6]",
                "test_unretrieved_future_exception_server_crash[ipv6-asyncio]",
            )
        },
        _TCP + "test_connection_refused[asyncio-multi]": ONE_LOCALHOST_ADDRESS,
        _TCP + "test_happy_eyeballs[asyncio-dualstack]": NO_IPV6_LOCALHOST_DUALSTACK,
    },
    "aiohttp": {
        f"tests/test_web_urldispatcher.py::{test}": RUN_AS_ROOT
        for test in (
            "test_static_directory_without_read_permission[pyloop-]",
            "test_static_directory_without_read_permission[pyloop-my_file.txt]",
            "test_static_file_without_read_permission[pyloop]",
        )
    },
    "uvicorn": {},
}

# Tests run but not judged: they do not use the loop under test, and fail on any loop
# when the machine is loaded. Reported, never held against a run.
PYTESTER_TIMEOUT = (
    "runs pytest in a subprocess (which uses asyncio's loop whatever the run's loop) with a "
    "3-second timeout: on two cores shared with other jobs pytest's start-up alone can take "
    "longer, on either loop's run"
)
UNJUDGED: dict[str, dict[str, str]] = {
    "anyio": {
        "tests/test_pytest_plugin.py::test_dynamic_async_fixture_access_does_not_hang": (
            PYTESTER_TIMEOUT
        ),
        "tests/test_pytest_plugin.py::test_keyboardinterrupt_during_test[asyncio]": (
            PYTESTER_TIMEOUT
        ),
    },
}

"""Fixtures of the compat tests: every test runs once per loop; TLS material from trustme."""

from __future__ import annotations

import ssl

import pytest
import trustme
from support import LOOPS


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request):
    """ "asyncio" or "ferroloop": the loop the test runs on."""
    return request.param


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """(server context, client context, certificate chain file, key file) for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "chain.pem", folder / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return server, client, str(chain), str(key)

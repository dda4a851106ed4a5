"""Writes the TLS test fixtures of ferroloop-loadgen (used by `cargo test --features tls`).

    python bench/loadgen/testdata/make_certs.py

ca.pem: a throw-away CA certificate (its key is not kept). server.pem and server.key: a
certificate for IP 127.0.0.1 signed by that CA, and its private key. ECDSA P-256, valid
from 2000 to 2999, so the test depends neither on the clock nor on a tool at test time.
The key protects nothing: it exists only for the loopback test server.
"""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2999, 12, 31, tzinfo=datetime.UTC)


def name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def certificate(subject, issuer, public_key, signing_key, extensions) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def key_usage(**kwargs: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    flags.update(kwargs)
    return x509.KeyUsage(**flags)


def main() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("ferroloop-loadgen test CA")
    ca = certificate(
        ca_name,
        ca_name,
        ca_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (key_usage(key_cert_sign=True, crl_sign=True), True),
        ],
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        name("127.0.0.1"),
        ca_name,
        server_key.public_key(),
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            ),
        ],
    )
    pem = serialization.Encoding.PEM
    (HERE / "ca.pem").write_bytes(ca.public_bytes(pem))
    (HERE / "server.pem").write_bytes(server.public_bytes(pem))
    (HERE / "server.key").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


if __name__ == "__main__":
    main()

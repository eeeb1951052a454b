"""Provisioning the embedded store's user without a moment of open access.

The store has no way to be born with a user: it takes ``createUser`` from whoever connects
first. So for that one command it runs with TLS that requires a client certificate, signed by
a throw-away certificate authority made here; no other process can complete a handshake. The
certificates live in a ``0700`` folder that is deleted right after.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo import MongoClient
from pymongo import errors as mongo_errors

from iapflow.contracts.private import write_secret
from iapflow.errors import StorageError


@dataclass(frozen=True)
class Certificates:
    """The files of one provisioning."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    """The client's certificate and key in one file, as pymongo takes them."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def make_certificates(folder: Path) -> Certificates:
    """A certificate authority, a server certificate for 127.0.0.1 and a client certificate,
    valid for an hour, written to ``folder`` (``0600`` each)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iapflow store provisioning")])

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
        )

    ca = (
        builder(ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, client_key = _key(), _key()
    server = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), server_key)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    client = builder(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iapflow")]), client_key
    ).sign(ca_key, hashes.SHA256())
    files = Certificates(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem"
    )
    write_secret(files.ca, _pem(ca))
    write_secret(files.server, _pem(server))
    write_secret(files.server_key, _key_pem(server_key))
    write_secret(files.client, _pem(client) + _key_pem(client_key))
    return files


def server_options(files: Certificates) -> list[str]:
    """The store's command line options for the provisioning run."""
    return [
        "--tls-cert-file", str(files.server), "--tls-key-file", str(files.server_key),
        "--tls-ca-file", str(files.ca), "--tls-require-client-cert",
    ]  # fmt: skip


def set_user(port: int, files: Certificates, username: str, password: str) -> None:
    """Create (or give a new password to) the store's user, with every right."""
    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true&tls=true"
        f"&tlsCAFile={files.ca}&tlsCertificateKeyFile={files.client}",
        serverSelectionTimeoutMS=15000,
    )
    try:
        admin = client.admin
        try:
            admin.command("createUser", username, pwd=password, roles=["root"])
        except mongo_errors.OperationFailure as exc:
            if "already exists" not in str(exc):
                raise
            admin.command("updateUser", username, pwd=password, roles=["root"])
    except mongo_errors.PyMongoError as exc:
        raise StorageError(f"could not give the embedded store its user: {exc}") from exc
    finally:
        client.close()

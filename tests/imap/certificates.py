"""Throwaway X.509 certificates for a test server, made with `cryptography`.

A test that wants implicit TLS needs a certificate a client can verify: a
certificate authority of its own (trusted only where a test says so, e.g.
through SSL_CERT_FILE) and a server certificate it signed for an IP address,
since the servers listen on 127.0.0.1 and clients check the address against
the subjectAltName (RFC 6125; a common name is not enough). The extensions
are those OpenSSL's strict verification asks for: key usages, basic
constraints and key identifiers. EC P-256 keys: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ServerFiles:
    """PEM files: the authority's certificate, the server's certificate and key."""

    ca: Path
    certificate: Path
    key: Path


def make_authority(name: str) -> Authority:
    """A self-signed certificate authority, valid from a day ago to a day ahead."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = _key_usage(cert_sign=True)
    certificate = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue_server_certificate(
    authority: Authority, address: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for one IP address, signed by `authority`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    issuer_key = authority.key.public_key()
    certificate = (
        _builder(subject, authority.certificate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
        )
        .sign(authority.key, hashes.SHA256())
    )
    return certificate, key


def write_server_files(folder: Path, address: str) -> ServerFiles:
    """A new authority and a server certificate for `address`, as PEM files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = make_authority(f"MailBridge test CA for {address}")
    certificate, key = issue_server_certificate(authority, address)
    files = ServerFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    write_certificate(files.ca, authority.certificate)
    write_certificate(files.certificate, certificate)
    files.key.touch(mode=0o600)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALIDITY / 2)
        .not_valid_after(now + VALIDITY / 2)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )

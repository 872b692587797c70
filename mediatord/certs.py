"""Certificates for the TLS listener: a CA, the server, one per domain, operators.

Identities live in the SAN as URIs, ``mediator://domain/<name>`` and
``mediator://operator/<name>``; the common name repeats them for tools that
only show a CN. Keys are ECDSA P-256 (what gRPC's BoringSSL negotiates fastest).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mediatord.core.config import BoardConfig

URI_SCHEME: Final = "mediator://"
VALIDITY: Final = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Issued:
    """A PEM key and certificate."""

    key_pem: bytes
    cert_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mediatord"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class Authority:
    """A CA that issues the daemon's and its clients' certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def create(cls, name: str = "mediatord CA", now: datetime.datetime | None = None) -> Authority:
        now = now or datetime.datetime.now(datetime.UTC)
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 10)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        uris: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
        now: datetime.datetime | None = None,
        validity: datetime.timedelta = VALIDITY,
    ) -> Issued:
        now = now or datetime.datetime.now(datetime.UTC)
        key = _key()
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(_pem(key), cert.public_bytes(serialization.Encoding.PEM))

    def issue_server(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> Issued:
        ips = tuple(h for h in hosts if _is_ip(h))
        dns = tuple(h for h in hosts if not _is_ip(h))
        return self.issue("mediatord", dns=dns, ips=ips, server=True)

    def issue_principal(
        self,
        kind: str,
        name: str,
        now: datetime.datetime | None = None,
        validity: datetime.timedelta = VALIDITY,
    ) -> Issued:
        """A client certificate for ``domain/<name>`` or ``operator/<name>``."""
        identity = f"{kind}/{name}"
        return self.issue(identity, uris=(f"{URI_SCHEME}{identity}",), now=now, validity=validity)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def init(
    directory: Path,
    board: BoardConfig,
    operators: tuple[str, ...] = ("admin",),
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> list[Path]:
    """Write a CA, the server's certificate and one certificate per domain and
    operator into ``directory``. Keys are created mode 0600. Returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority.create()
    written: list[Path] = []

    def write(stem: str, issued: Issued | None = None) -> None:
        if issued is None:
            path = directory / f"{stem}.pem"
            path.write_bytes(ca.cert_pem)
            key_path = directory / f"{stem}.key"
            key_path.touch(mode=0o600)
            key_path.chmod(0o600)
            key_path.write_bytes(_pem(ca.key))
            written.extend([path, key_path])
            return
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(issued.cert_pem)
        key_path.touch(mode=0o600)
        key_path.chmod(0o600)
        key_path.write_bytes(issued.key_pem)
        written.extend([cert_path, key_path])

    write("ca")
    write("server", ca.issue_server(hosts))
    for domain in board.domains:
        write(f"domain-{domain.name}", ca.issue_principal("domain", domain.name))
    for operator in operators:
        write(f"operator-{operator}", ca.issue_principal("operator", operator))
    return written

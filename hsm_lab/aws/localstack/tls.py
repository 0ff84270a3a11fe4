"""The lab's own CA and LocalStack's server certificate; the trust anchor clients pin to."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hsm_lab.aws.localstack.config import CA_ENV, TLS_DAYS, LocalStackError
from hsm_lab.aws.localstack.files import _atomic_write, paths

if TYPE_CHECKING:  # cryptography is imported lazily, when a certificate is made or checked
    from datetime import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec


def _cert_usable(ca_pem: Path, server_pem: Path) -> bool:
    """The lab's certificate exists, is issued by the lab's CA and is valid for a day more."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        text = server_pem.read_bytes()
        cert = x509.load_pem_x509_certificate(text[text.index(b"-----BEGIN CERTIFICATE-----") :])
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)


def ensure_tls(lab_dir: str | os.PathLike[str]) -> Path:
    """The lab's CA and LocalStack's server certificate (made once); returns the CA's path.

    A fresh P-256 CA signs one server certificate for ``localhost``, ``127.0.0.1`` and ``::1``;
    the CA's private key only ever lives in this function's memory, so nobody can issue a
    second certificate that the lab's clients would accept. The server key and certificate go
    to ``server.pem`` (0600, directory 0700) for LocalStack's ``CUSTOM_SSL_CERT_PATH``.
    """
    from datetime import UTC, datetime

    p = paths(lab_dir)
    p.tls.mkdir(parents=True, exist_ok=True)
    os.chmod(p.tls, 0o700)
    if _cert_usable(p.ca, p.server_pem):
        return p.ca
    now = datetime.now(UTC)
    ca_key, ca = _new_ca(f"clefs lab CA {p.root.name}"[:64], now)
    server_pem = _new_server_pem(ca_key, ca, now)
    del ca_key  # never serialised: the CA can issue nothing more
    for stale in (p.tls / "server.pem.key", p.tls / "server.pem.crt"):
        stale.unlink(missing_ok=True)  # LocalStack's split of an older server.pem
    _atomic_write(p.server_pem, server_pem, 0o600)
    _atomic_write(p.ca, _pem(ca), 0o644)
    return p.ca


def _new_ca(common_name: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh P-256 CA (path length 0, cert and CRL signing only) valid TLS_DAYS from `now`."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=TLS_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca


def _new_server_pem(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, now: datetime) -> str:
    """A fresh server key and its certificate for localhost, 127.0.0.1 and ::1, issued by `ca`:
    the PEM LocalStack reads (key, then certificate)."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=TLS_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem.decode("ascii") + _pem(server)


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def trust_anchor(lab_dir: str | os.PathLike[str] | None, explicit: Path | None = None) -> Path:
    """The CA to pin LocalStack's certificate to: given, $CLEFS_LOCALSTACK_CA, or the lab's own.

    Never fetched from the server: a LocalStack this lab did not start is only trusted when
    someone says which CA issued its certificate.
    """
    configured = explicit or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV, "").strip() else None)
    if configured is not None:
        if not configured.is_file():
            raise LocalStackError(
                f"{CA_ENV}={configured}: no such file; point it at <lab>/localstack/tls/ca.pem of the "
                "lab that started LocalStack"
            )
        return configured.resolve()
    if lab_dir is not None and paths(lab_dir).ca.is_file():
        return paths(lab_dir).ca
    raise LocalStackError(
        "cannot pin LocalStack's TLS certificate: this lab did not start it and no CA was given; "
        f"set {CA_ENV}=<the lab that started it>/localstack/tls/ca.pem, or start one for this lab "
        "with `hsm-lab localstack start`"
    )

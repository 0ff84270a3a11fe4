"""The deployed stack as the HSM side sees it: its outputs, and clients to reach it.

Stack outputs (`classes`, `primary_region`, ...) are the contract between the
Pulumi program and everything after it (BYOK, data path, verify). They are
kept in <lab>/stack-outputs.json, written by `hsm-lab stack apply-localstack`
(the LocalStack harness) or `hsm-lab stack outputs` (with the Pulumi CLI).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hsm_lab import errors
from hsm_lab.fs import atomic_write_text

OUTPUTS_FILE = "stack-outputs.json"
ClientFactory = Callable[[str, str], Any]
"""(service, region) -> boto3 client; e.g. :func:`localstack_clients` or :func:`aws_clients`."""
ClientFor = ClientFactory
TLS_PEM = "tls.pem"


def outputs_path(lab_root: Path, explicit: Path | None = None) -> Path:
    return explicit or lab_root / OUTPUTS_FILE


def save_outputs(path: Path, outputs: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(outputs, indent=2, sort_keys=True, default=str) + "\n")


def load_outputs(path: Path) -> dict[str, Any]:
    try:
        outputs = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.InputError(
            f"no stack outputs at {path}: run `hsm-lab stack apply-localstack` (or `hsm-lab stack up`) first"
        ) from None
    except json.JSONDecodeError:
        raise errors.InputError(f"{path} is not JSON; apply the stack again") from None
    if not isinstance(outputs, dict) or not isinstance(outputs.get("classes"), dict):
        raise errors.InputError(f"{path} has no 'classes' output; apply the stack again")
    return outputs


def class_key_arns(outputs: dict[str, Any], data_class: str) -> list[str]:
    """The class key ARNs, primary region first."""
    try:
        regions = outputs["classes"][data_class]["regions"]
    except KeyError:
        known = ", ".join(sorted(outputs["classes"]))
        raise errors.InputError(f"no data class {data_class!r} in the stack (classes: {known})") from None
    primary = outputs.get("primary_region")
    return [regions[r]["key_arn"] for r in sorted(regions, key=lambda r: r != primary)]


@dataclass(frozen=True)
class TlsPin:
    """LocalStack's self-signed certificate, trusted exactly (and nothing else)."""

    url: str  # https://localhost:<port>: the name the certificate carries
    pem: Path
    sha256: str  # fingerprint of the DER certificate

    def describe(self) -> str:
        return (
            f"TLS verified against LocalStack's pinned certificate {self.pem} (sha256 {self.sha256[:16]}...)"
        )


def _cert_names(pem: str) -> tuple[set[str], set[str]]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def pin_localstack_tls(endpoint: str, lab_dir: Path) -> TlsPin:
    """Fetch the loopback LocalStack's certificate, write it to <lab>/localstack/tls.pem, pin it.

    LocalStack serves HTTPS with a self-signed certificate on its port. Its subjectAltName
    holds ``DNS:localhost`` and ``DNS:localhost.localstack.cloud`` but a malformed
    ``DNS:127.0.0.1IP:127.0.0.1`` instead of an IP entry, so clients talk to
    ``https://localhost:<port>`` (``/etc/hosts``) with exactly this certificate as trust anchor.
    Fetching it over loopback is trust on first use: clients made from this pin accept only
    this certificate; the next call fetches it again (LocalStack makes one per data directory).
    """
    from hsm_lab.localstack import is_loopback

    parts = urlsplit(endpoint)
    if not is_loopback(endpoint) or parts.hostname is None:
        raise errors.ClefsError(f"{endpoint}: certificate pinning is for a loopback LocalStack only")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = "127.0.0.1" if parts.hostname.lower() == "localhost" else parts.hostname
    try:
        pem = ssl.get_server_certificate((host, port), timeout=5)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ClefsError(
            f"cannot fetch LocalStack's TLS certificate from {host}:{port}: {exc}"
        ) from None
    dns, ips = _cert_names(pem)
    if "localhost" in dns:
        url = f"https://localhost:{port}"
    elif host in ips:
        url = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
    else:
        raise errors.ClefsError(
            f"LocalStack's certificate at {host}:{port} names neither localhost nor {host}: "
            "TLS cannot be verified"
        )
    path = Path(lab_dir).resolve() / "localstack" / TLS_PEM
    atomic_write_text(path, pem)
    der = ssl.PEM_cert_to_DER_cert(pem)
    return TlsPin(url, path, hashlib.sha256(der).hexdigest())


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=60,
    )


def localstack_clients(endpoint: str, lab_dir: Path) -> tuple[ClientFactory, TlsPin]:
    """HTTPS boto3 clients for the lab's LocalStack, verifying its pinned certificate.

    Clients are made once per (service, region) under a lock: boto3's default session is
    not thread-safe, and the stack harness asks for clients from several threads.
    """
    import boto3

    pin = pin_localstack_tls(endpoint, lab_dir)
    config = _boto_config()
    made: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def factory(service: str, region: str) -> Any:
        with lock:
            if (service, region) not in made:
                made[(service, region)] = _client(service, region)
            return made[(service, region)]

    def _client(service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=pin.url,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 -- LocalStack's dummy credentials
            verify=str(pin.pem),
            config=config,
        )

    return factory, pin


def aws_clients(profile: str | None = None) -> ClientFactory:
    """Real AWS: the default credential chain, HTTPS with the system trust store."""
    import boto3

    session = boto3.Session(profile_name=profile)
    config = _boto_config()
    lock = threading.Lock()

    def factory(service: str, region: str) -> Any:
        with lock:
            return session.client(service, region_name=region, config=config)

    return factory

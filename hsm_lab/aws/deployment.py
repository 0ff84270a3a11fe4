"""The deployed stack as the HSM side sees it: its outputs, and clients to reach it.

Stack outputs (`classes`, `primary_region`, ...) are the contract between the
Pulumi program and everything after it (BYOK, data path, verify). They are
kept in <lab>/stack-outputs.json, written by `hsm-lab stack apply-localstack`
(the LocalStack harness) or `hsm-lab stack outputs` (with the Pulumi CLI).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
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
"""(service, region) -> boto3 client; :func:`localstack_clients`, or a role's from hsm_lab.aws.access."""
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
    """LocalStack's TLS, pinned to the CA the lab made (never to what the server sends)."""

    url: str  # https://<loopback host>:<port>
    pem: Path  # the trust anchor: the lab CA's certificate
    sha256: str  # fingerprint of the CA certificate (DER)

    def describe(self) -> str:
        return f"TLS verified against the lab's own CA {self.pem} (sha256 {self.sha256[:16]}...)"


def pin_localstack_tls(endpoint: str, lab_dir: Path, *, ca: Path | None = None) -> TlsPin:
    """Pin a loopback LocalStack's TLS to the lab's CA, and check the server presents its certificate.

    The trust anchor is `ca`, else $CLEFS_LOCALSTACK_CA, else ``<lab>/localstack/tls/ca.pem``
    (hsm_lab.localstack.trust_anchor): the lab decides it, nothing is fetched from the port. A
    server presenting any other certificate fails the handshake here, in one line, and would
    fail every client call made from this pin.
    """
    from hsm_lab.aws.localstack import LocalStackError, is_loopback, trust_anchor

    parts = urlsplit(endpoint)
    if not is_loopback(endpoint) or parts.hostname is None:
        raise errors.ClefsError(f"{endpoint}: certificate pinning is for a loopback LocalStack only")
    try:
        anchor = trust_anchor(lab_dir, ca)
    except LocalStackError as exc:
        raise errors.ClefsError(str(exc)) from None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    context = ssl.create_default_context(cafile=str(anchor))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        raise errors.ClefsError(
            f"LocalStack at {host}:{port} presents a certificate not issued by the lab's CA {anchor} "
            f"({exc.verify_message}): refusing it; is this the LocalStack the lab started?"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise errors.ClefsError(f"cannot open TLS to LocalStack at {host}:{port}: {exc}") from None
    der = ssl.PEM_cert_to_DER_cert(anchor.read_text())
    return TlsPin(url, anchor, hashlib.sha256(der).hexdigest())


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=16,  # verify reads objects from several threads
    )


DEFAULT_LOCALSTACK_ACCOUNT = "000000000000"
ACCOUNT_FILE = "account-id"


def lab_account(lab_root: Path) -> str:
    """This lab's own AWS account id in LocalStack (made once, kept in <lab>/localstack/).

    LocalStack takes a 12-digit access key id as the account (docs/localstack.md): each lab is
    its own account, so two labs sharing one LocalStack never see each other's aliases or keys,
    exactly as two AWS accounts would not.
    """
    path = Path(lab_root).resolve() / "localstack" / ACCOUNT_FILE
    try:
        account = path.read_text().strip()
    except FileNotFoundError:
        account = ""
    if len(account) == 12 and account.isdigit():
        return account
    account = str(100_000_000_000 + secrets.randbelow(900_000_000_000))
    atomic_write_text(path, account + "\n")
    return account


def localstack_clients(
    endpoint: str, lab_dir: Path, *, ca: Path | None = None, account_id: str | None = None
) -> tuple[ClientFactory, TlsPin]:
    """HTTPS boto3 clients for a loopback LocalStack, trusting only the lab's CA.

    `account_id` (12 digits) picks the LocalStack account (default 000000000000); its secret
    is LocalStack's public dummy "test". Clients are made once per (service, region) under a
    lock: boto3's default session is not thread-safe, and the stack harness asks for clients
    from several threads.
    """
    import boto3

    pin = pin_localstack_tls(endpoint, lab_dir, ca=ca)
    account = account_id or DEFAULT_LOCALSTACK_ACCOUNT
    if not (len(account) == 12 and account.isdigit()):
        raise errors.InputError(f"LocalStack account id {account!r} is not 12 digits")
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
            aws_access_key_id=account,  # LocalStack: the account id; not a secret
            aws_secret_access_key="test",  # noqa: S106 -- LocalStack's dummy credentials
            verify=str(pin.pem),
            config=config,
        )

    return factory, pin


class StackGone(errors.ClefsError):
    """The stack outputs name keys and buckets that no longer exist (LocalStack was restarted)."""


def require_stack(outputs: dict[str, Any], client_for: ClientFactory, *, localstack: bool) -> None:
    """Check that every class key and bucket of the outputs still exists; one line if not.

    LocalStack keeps no state across a restart (docs/localstack.md): without this, every command
    would fail on its own with NoSuchBucket or NotFoundException and no hint of why.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    classes = outputs.get("classes") or {}
    gone, total = [], 0
    for data_class, spec in sorted(classes.items()):
        for region, where in sorted((spec.get("regions") or {}).items()):
            for kind, call in (
                ("key", lambda r=region, w=where: client_for("kms", r).describe_key(KeyId=w["key_arn"])),
                ("bucket", lambda r=region, w=where: client_for("s3", r).head_bucket(Bucket=w["bucket"])),
            ):
                total += 1
                try:
                    call()
                except ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    if code in ("NotFoundException", "NoSuchBucket", "404", "NotFound"):
                        gone.append(f"{data_class} {region} {kind}")
                    else:
                        raise errors.ClefsError(
                            f"cannot read the stack's {kind} in {region}: {code}"
                        ) from None
                except BotoCoreError as exc:
                    raise errors.ClefsError(
                        f"cannot reach the stack: {' '.join(str(exc).split())[:160]}"
                    ) from None
    if not gone:
        return
    names = ", ".join(sorted(classes))
    if localstack:
        raise StackGone(
            f"{len(gone)} of {total} keys and buckets of the stack are gone from LocalStack "
            f"(e.g. {gone[0]}): "
            "LocalStack keeps no state, so it was restarted; run `hsm-lab stack apply-localstack`, then "
            f"`hsm-lab byok import --class C` for each class ({names})"
        )
    raise StackGone(
        f"{len(gone)} of {total} keys and buckets of the stack no longer exist (e.g. {gone[0]}): "
        "deploy the stack again (`hsm-lab stack up`) and import the class keys"
    )

"""The deployed stack as the HSM side sees it: its outputs, and clients to reach it.

Stack outputs (`classes`, `primary_region`, ...) are the contract between the
Pulumi program and everything after it (BYOK, data path, verify): `clefs.stack-outputs/v1`,
typed and parsed once in infra.model.outputs (docs/stack-outputs.md). They are kept in
<lab>/stack-outputs.json, written by `hsm-lab stack apply-localstack` (the LocalStack harness,
through :func:`save_outputs`, which checks and stamps them) or `hsm-lab stack outputs` (with
the Pulumi CLI).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hsm_lab import errors
from hsm_lab.aws.access import ClientFactory as ClientFactory
from hsm_lab.fs import atomic_write_text
from infra.model.outputs import OutputsError, RegionOutputs, StackOutputs, parse_outputs
from infra.model.outputs import load_outputs as read_outputs

OUTPUTS_FILE = "stack-outputs.json"
TLS_PEM = "tls.pem"
Outputs = StackOutputs | Mapping[str, Any]
"""The typed contract, or a document still to be checked (what the harness and `pulumi up` return)."""


def outputs_path(lab_root: Path, explicit: Path | None = None) -> Path:
    return explicit or lab_root / OUTPUTS_FILE


def stack_outputs(outputs: Outputs, source: str = "stack outputs") -> StackOutputs:
    """`outputs` as the typed contract (infra.model.outputs), checked; InputError if it is not one."""
    if isinstance(outputs, StackOutputs):
        return outputs
    try:
        return parse_outputs(outputs, source)
    except OutputsError as exc:
        raise errors.InputError(str(exc)) from None


def save_outputs(path: Path, outputs: Outputs) -> None:
    """Check `outputs` against clefs.stack-outputs/v1 and write them with their `schema`."""
    document = stack_outputs(outputs).to_document()
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def load_stack(path: Path) -> StackOutputs:
    """Read and check <lab>/stack-outputs.json (docs/stack-outputs.md); one InputError line if not."""
    try:
        return read_outputs(path)
    except FileNotFoundError:
        raise errors.InputError(
            f"no stack outputs at {path}: run `hsm-lab stack apply-localstack` (or `hsm-lab stack up`) first"
        ) from None
    except IsADirectoryError:
        raise errors.InputError(f"{path} is a directory, not the stack outputs; pass the file") from None
    except OSError as exc:
        raise errors.InputError(f"cannot read the stack outputs {path}: {exc.strerror or exc}") from None
    except OutputsError as exc:
        raise errors.InputError(str(exc)) from None


def load_outputs(path: Path) -> dict[str, Any]:
    """The checked document as a plain dict: the adapter for callers not yet on :func:`load_stack`."""
    return load_stack(path).to_document()


def class_key_arns(outputs: Outputs, data_class: str) -> list[str]:
    """The class key ARNs, primary region first."""
    try:
        return stack_outputs(outputs).key_arns(data_class)
    except OutputsError as exc:
        raise errors.InputError(str(exc)) from None


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


def require_stack(outputs: Outputs, client_for: ClientFactory, *, localstack: bool) -> None:
    """Check that every class key and bucket of the outputs still exists; one line if not.

    LocalStack keeps no state across a restart (docs/localstack.md): without this, every command
    would fail on its own with NoSuchBucket or NotFoundException and no hint of why.
    """
    stack = stack_outputs(outputs)
    gone, total = [], 0
    for data_class, spec in sorted(stack.classes.items()):
        for region, where in sorted(spec.regions.items()):
            for kind in ("key", "bucket"):
                total += 1
                if _gone(client_for, kind, region, where):
                    gone.append(f"{data_class} {region} {kind}")
    if not gone:
        return
    names = ", ".join(sorted(stack.classes))
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


def _gone(client_for: ClientFactory, kind: str, region: str, where: RegionOutputs) -> bool:
    """Whether the class key (DescribeKey) or bucket (HeadBucket) is missing; other errors raise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if kind == "key":
            client_for("kms", region).describe_key(KeyId=where.key_arn)
        else:
            client_for("s3", region).head_bucket(Bucket=where.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NotFoundException", "NoSuchBucket", "404", "NotFound"):
            return True
        raise errors.ClefsError(f"cannot read the stack's {kind} in {region}: {code}") from None
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot reach the stack: {' '.join(str(exc).split())[:160]}") from None
    return False

"""Where LocalStack is: endpoint rules (loopback only unless allowed) and its health report."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hsm_lab.aws.localstack.config import DEFAULT_PORT, ENDPOINT_ENV, REQUIRED_SERVICES, LocalStackError

_HEALTHY_STATES = frozenset({"available", "running"})


@dataclass(frozen=True)
class Endpoint:
    """Where LocalStack is expected, and which setting said so."""

    url: str
    source: str  # CLEFS_LOCALSTACK_ENDPOINT | AWS_ENDPOINT_URL | LOCALSTACK_HOST | default | lab

    @property
    def external(self) -> bool:
        """True when the project was told to use this endpoint and never start/stop one."""
        return self.source == ENDPOINT_ENV

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def is_loopback(url: str) -> bool:
    """True if the URL's host is 127.0.0.0/8, ::1 or ``localhost`` (no DNS lookup)."""
    host = urlsplit(url).hostname
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, allow_remote: bool = False) -> str:
    """Validate an endpoint URL before any traffic is sent; return it normalised."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocalStackError(
            f"LocalStack endpoint {url!r} is not an http(s)://host:port URL; "
            f"fix {ENDPOINT_ENV} / AWS_ENDPOINT_URL / LOCALSTACK_HOST"
        )
    if not allow_remote and not is_loopback(url):
        raise LocalStackError(
            f"refusing LocalStack endpoint {url}: not loopback (127.0.0.0/8, ::1, localhost); "
            "the lab never sends traffic off this machine unless allow_remote is given"
        )
    return url


def configured_endpoint() -> Endpoint:
    """The endpoint the environment points at, following localstack-client's conventions.

    ``CLEFS_LOCALSTACK_ENDPOINT`` wins (and means "use it, start nothing"); otherwise
    ``localstack_client.config`` decides: ``AWS_ENDPOINT_URL``, else ``LOCALSTACK_HOST``
    (``host[:port]``) with ``USE_SSL``, else ``http://localhost:4566``.
    """
    explicit = os.environ.get(ENDPOINT_ENV, "").strip()
    if explicit:
        return Endpoint(explicit.rstrip("/"), ENDPOINT_ENV)
    from localstack_client import config as ls_config  # imports boto3: keep it lazy

    try:
        url = ls_config.get_service_endpoint("edge")
    except RuntimeError as exc:  # LOCALSTACK_HOST that does not parse
        raise LocalStackError(f"bad LOCALSTACK_HOST: {exc}") from None
    if os.environ.get("AWS_ENDPOINT_URL", "").strip():
        source = "AWS_ENDPOINT_URL"
    elif os.environ.get("LOCALSTACK_HOST", "").strip():
        source = "LOCALSTACK_HOST"
    else:
        source = "default"
    return Endpoint((url or f"http://localhost:{DEFAULT_PORT}").rstrip("/"), source)


def health(
    url: str, *, timeout: float = 2.0, allow_remote: bool = False, ca: Path | None = None
) -> dict[str, Any] | None:
    """GET /_localstack/health; the parsed JSON, or None if nothing sane answers.

    TLS is always verified: against `ca` (the lab's CA) when given, else the system's trust
    store. An https loopback URL without a CA is probed over plain http on the same port
    instead: LocalStack serves both there, and the health report is public and stays on this
    machine, whereas its certificate is self-signed (no verify-off path, docs/localstack.md).
    """
    url = check_endpoint(url, allow_remote=allow_remote)
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https:"):
        if ca is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca))))
        elif is_loopback(url):
            url = "http:" + url[len("https:") :]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(f"{url}/_localstack/health", timeout=timeout) as response:
            body = json.loads(response.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) else None


def is_healthy(report: dict[str, Any] | None) -> bool:
    """True when every service the lab uses (REQUIRED_SERVICES) is available or running."""
    if not report:
        return False
    services = report.get("services") or {}
    return all(services.get(name) in _HEALTHY_STATES for name in REQUIRED_SERVICES)

"""LocalStack for the lab: start it on the host (no Docker), or use one already running.

Two ways to get an AWS emulator for S3 and KMS:

* **Use one already running.** ``CLEFS_LOCALSTACK_ENDPOINT=http://127.0.0.1:4566`` means
  "use this one, never start or stop anything". Without it, the endpoint comes from the
  localstack-client conventions (``AWS_ENDPOINT_URL``, else ``LOCALSTACK_HOST`` and
  ``USE_SSL``, else ``http://localhost:4566``); if a healthy LocalStack answers there, it is
  used as is.
* **Start one in host mode.** ``localstack-core`` needs Python >= 3.12, so it gets its own
  venv (``<repo>/.venv-localstack``) with the pins it needs. It listens on loopback, keeps its
  files under ``<lab>/localstack/`` (``data/``, ``localstack.log``, ``localstack.pid``), and
  is stopped by the PID it wrote -- only if that PID is still our LocalStack.

Endpoints that are not loopback (127.0.0.0/8, ::1, localhost) are refused unless the caller
passes ``allow_remote=True``: the lab never sends traffic off the machine by accident.

What it starts binds 127.0.0.1 only (``GATEWAY_SERVER=hypercorn``: the default twisted gateway
ignores the host in ``GATEWAY_LISTEN`` and binds 0.0.0.0, see docs/localstack.md), gets an
allow-listed environment (no PIN, no ``CLEFS_*``, no AWS credential) and serves a certificate
issued by the lab's own CA, whose private key is never written anywhere: clients trust that CA
only, so the pin is decided by the lab, never fetched from whatever answers on the port.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil

from hsm_lab.errors import ClefsError
from infra.model.settings import DEFAULT_PRIMARY_REGION

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_NAME = ".venv-localstack"
# Exactly what localstack-core 2026.3.0 needs to run in host mode (docs/localstack.md, "How it starts").
PINS: tuple[str, ...] = (
    "localstack-core[runtime]==2026.3.0",
    "service-identity==24.2.0",
    "cbor2<6",
    "pyopenssl==25.3.0",
    "cryptography>=46,<47",
)
MIN_PYTHON = (3, 12)
DEFAULT_PORT = 4566
DEFAULT_REGION = DEFAULT_PRIMARY_REGION
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
SERVICES = "s3,kms,iam,sts,sns,events"  # sns, events: the key alarms (infra/alarms.py)
REQUIRED_SERVICES = tuple(SERVICES.split(","))  # healthy means every service the lab uses is up
RUNTIME_MODULE = "localstack.runtime.main"

ENDPOINT_ENV = "CLEFS_LOCALSTACK_ENDPOINT"
CA_ENV = "CLEFS_LOCALSTACK_CA"
PYTHON_ENV = "CLEFS_LOCALSTACK_PYTHON"
LAB_ENV = "CLEFS_LAB"
# The only variables of ours LocalStack inherits (docs/localstack.md): it gets no PIN, no
# CLEFS_* and no AWS credential, whatever the shell that started it holds.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
_ENV_DENY = re.compile(r"PIN|PASSPHRASE|SECRET|TOKEN|^CLEFS_|^AWS_", re.IGNORECASE)
TLS_DAYS = 365

_PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored")
_HEALTHY_STATES = frozenset({"available", "running"})
# Processes this interpreter started, so stop() can reap them (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalStackError(ClefsError):
    """LocalStack could not be installed, started, reached or stopped (one line, what to do)."""


# --------------------------------------------------------------------------- endpoints


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


# --------------------------------------------------------------------------- handle


@dataclass(frozen=True)
class LocalStack:
    """A healthy LocalStack: its endpoint, and the PID if this lab started it."""

    endpoint: str
    pid: int | None = None
    lab_dir: Path | None = None
    owned: bool = False  # started by this call: the caller that got it stops it
    version: str | None = None
    startup_seconds: float | None = None
    source: str = "lab"
    ca: Path | None = None  # the trust anchor of its certificate (None: unknown, cannot pin)

    def client_env(self) -> dict[str, str]:
        """What another process (another lab) needs to use this LocalStack: endpoint and CA."""
        env = {ENDPOINT_ENV: self.endpoint}
        if self.ca is not None:
            env[CA_ENV] = str(self.ca)
        return env

    @property
    def log(self) -> Path | None:
        return paths(self.lab_dir).log if self.lab_dir else None

    def health(self) -> dict[str, Any] | None:
        return health(self.endpoint, allow_remote=not is_loopback(self.endpoint), ca=self.ca)

    def client(self, service: str, region: str = DEFAULT_REGION) -> Any:
        """A boto3 client for this LocalStack with the dummy credentials test/test.

        Over https it trusts only this LocalStack's CA (`ca`; the system's trust without one):
        there is no verify-off path. The data path's pinned clients are aws.deployment's."""
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
        )
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 -- LocalStack's dummy credentials
            verify=str(self.ca) if self.ca is not None and self.endpoint.startswith("https:") else None,
            config=config,
        )


@dataclass(frozen=True)
class LabPaths:
    root: Path
    dir: Path
    data: Path
    log: Path
    pid: Path
    tls: Path  # 0700: ca.pem (public), server.pem (server key + certificate, 0600)

    @property
    def ca(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.tls / "server.pem"


def paths(lab_dir: str | os.PathLike[str]) -> LabPaths:
    root = Path(lab_dir).resolve()
    base = root / "localstack"
    return LabPaths(
        root, base, base / "data", base / "localstack.log", base / "localstack.pid", base / "tls"
    )


# --------------------------------------------------------------------------- TLS


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
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    p = paths(lab_dir)
    p.tls.mkdir(parents=True, exist_ok=True)
    os.chmod(p.tls, 0o700)
    if _cert_usable(p.ca, p.server_pem):
        return p.ca
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clefs lab CA {p.root.name}"[:64])])
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
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
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
    del ca_key  # never serialised: the CA can issue nothing more
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = serialization.Encoding.PEM
    for stale in (p.tls / "server.pem.key", p.tls / "server.pem.crt"):
        stale.unlink(missing_ok=True)  # LocalStack's split of an older server.pem
    _atomic_write(p.server_pem, (key_pem + server.public_bytes(pem)).decode("ascii"), 0o600)
    _atomic_write(p.ca, ca.public_bytes(pem).decode("ascii"), 0o644)
    return p.ca


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


def default_lab() -> Path:
    return Path(os.environ.get(LAB_ENV) or "lab").resolve()


# --------------------------------------------------------------------------- venv


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not match:
        return None  # e.g. a pyenv shim for a version that is not selected
    return int(match[1]), int(match[2])


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def find_python() -> tuple[Path, tuple[int, int]]:
    """The first Python >= 3.12: $CLEFS_LOCALSTACK_PYTHON, python3.13, python3.12, pyenv."""
    explicit = os.environ.get(PYTHON_ENV, "").strip()
    if explicit:
        version = _python_version(explicit)
        if version is None or version < MIN_PYTHON:
            got = "not runnable" if version is None else f"Python {_fmt(version)}"
            raise LocalStackError(f"{PYTHON_ENV}={explicit} is {got}; LocalStack needs Python >= 3.12")
        return Path(explicit), version
    candidates = [found for name in ("python3.13", "python3.12") if (found := shutil.which(name))]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for pattern in ("3.13.*", "3.12.*"):
        candidates += sorted(glob.glob(f"{pyenv_root}/versions/{pattern}/bin/python"), reverse=True)
    for candidate in candidates:
        version = _python_version(candidate)
        if version is not None and version >= MIN_PYTHON:
            return Path(candidate), version
    raise LocalStackError(
        "no Python >= 3.12 found for LocalStack (tried $CLEFS_LOCALSTACK_PYTHON, python3.13, "
        f"python3.12, {pyenv_root}/versions/3.1[23]*): install one (e.g. `pyenv install 3.12`) "
        f"and/or set {PYTHON_ENV}=/path/to/python3.12"
    )


def venv_dir(root: str | os.PathLike[str] = REPO_ROOT) -> Path:
    return Path(root) / VENV_NAME


def _pins_digest(version: tuple[int, int]) -> str:
    text = "\n".join([*PINS, f"python {_fmt(version)}"])
    return hashlib.sha256(text.encode()).hexdigest()


def _pip(python: Path, args: list[str], log: Path, echo: Callable[[str], None] | None = None) -> int:
    """Run pip, appending its output minus the mirror-location noise to `log`.

    With `echo`, a line at least every 2 s (what pip last said), so a first install of a
    minute or two is never silent.
    """
    last = ["starting"]
    done = threading.Event()

    def tick() -> None:
        began = time.monotonic()
        while not done.wait(2.0):
            if echo is not None:
                echo(f"  pip, {time.monotonic() - began:.0f} s: {last[0][:90]}")

    ticker = threading.Thread(target=tick, daemon=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {python} -m pip {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(
            [str(python), "-m", "pip", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_clean_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}),
        )
        assert proc.stdout is not None
        ticker.start()
        try:
            for line in proc.stdout:
                if not _PIP_NOISE.match(line):
                    out.write(line)
                    if line.strip():
                        last[0] = line.strip()
            return proc.wait()
        finally:
            done.set()
            ticker.join()


def ensure_venv(
    root: str | os.PathLike[str] = REPO_ROOT, *, echo: Callable[[str], None] | None = None
) -> Path:
    """Make `<root>/.venv-localstack` hold exactly PINS; return its python. Idempotent.

    A stamp file records a hash of the pins and the Python version; when it matches and the
    venv's python runs, nothing is installed. pip's output goes to `<venv>/install.log`.
    """
    venv = venv_dir(root)
    python = venv / "bin" / "python"
    stamp = venv / ".clefs-pins.sha256"
    venv.mkdir(parents=True, exist_ok=True)
    with (venv / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions may get here at once
        current = _python_version(str(python)) if python.exists() else None
        if (
            current is not None
            and current >= MIN_PYTHON
            and stamp.exists()
            and stamp.read_text().strip() == _pins_digest(current)
        ):
            return python
        if current is None or current < MIN_PYTHON:
            base, current = find_python()
            for entry in venv.iterdir():  # a broken or too-old venv: rebuild, keep the lock
                if entry.name == ".lock":
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            if echo:
                echo(f"creating {venv} with Python {_fmt(current)} ({base})")
            made = subprocess.run(
                [str(base), "-m", "venv", str(venv)],
                capture_output=True,
                text=True,
                check=False,
                env=_clean_env(),
            )
            if made.returncode != 0:
                last = (made.stderr.strip().splitlines() or ["?"])[-1]
                raise LocalStackError(f"could not create {venv} with {base}: {last}")
        log = venv / "install.log"
        log.write_text("")
        if echo:
            echo(f"installing LocalStack into {venv} (first time: a minute or two); log: {log}")
        rc = _pip(python, ["install", *PINS], log, echo)
        if rc != 0:
            raise LocalStackError(f"installing LocalStack into {venv} failed (pip exit {rc}); see {log}")
        check = subprocess.run(
            [str(python), "-c", "import localstack.runtime.main"],
            capture_output=True,
            text=True,
            check=False,
            env=_clean_env(),
        )
        if check.returncode != 0:
            with log.open("a", encoding="utf-8") as out:
                out.write(check.stdout + check.stderr)
            raise LocalStackError(f"LocalStack installed in {venv} does not import; see {log}")
        freeze = subprocess.run(
            [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False
        )
        (venv / "freeze.txt").write_text(freeze.stdout)
        _atomic_write(stamp, _pins_digest(current) + "\n")
    return python


# --------------------------------------------------------------------------- processes


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """For pip and venv: this environment minus our venv's Python settings and any secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
        and (key.startswith("PIP_") or not _ENV_DENY.search(key))
    }
    env.update(extra or {})
    return env


def localstack_env(settings: dict[str, str]) -> dict[str, str]:
    """LocalStack's whole environment: the allow-list (ENV_ALLOW) plus its own settings."""
    env = {key: os.environ[key] for key in ENV_ALLOW if key in os.environ}
    env.update(settings)
    leaked = sorted(key for key in env if _ENV_DENY.search(key))
    if leaked:  # a programming error, never a user's: refuse rather than pass a secret on
        raise LocalStackError(f"refusing to start LocalStack with {', '.join(leaked)} in its environment")
    return env


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_pid_file(pid_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(pid_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie counts as gone; our own children are reaped)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _is_our_localstack(pid: int, data_dir: Path) -> bool:
    """True only if `pid` runs localstack.runtime.main with this lab's data directory."""
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        environ = process.environ()
    except psutil.Error:
        return False
    if RUNTIME_MODULE not in cmdline:
        return False
    return environ.get("FILESYSTEM_ROOT") == str(data_dir)


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` and its descendants (LocalStack may spawn helpers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total or None


def _port_in_use(port: int) -> bool:
    """Something listens on the port (LocalStack binds 0.0.0.0, so check that too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 -- bound for a moment, never listening
        except OSError:
            return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _terminate(pid: int, timeout: float) -> Literal["stopped", "killed"]:
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        outcome: Literal["stopped", "killed"] = "stopped"
    else:
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
        outcome = "killed"
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
    return outcome


def _log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _wait_healthy(url: str, timeout: float, alive: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        report = health(url, timeout=min(2.0, max(0.2, deadline - time.monotonic())))
        if is_healthy(report):
            return report
        if alive is not None and not alive():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


# --------------------------------------------------------------------------- lifecycle


def start(
    lab_dir: str | os.PathLike[str],
    port: int = DEFAULT_PORT,
    *,
    timeout: float = START_TIMEOUT,
    root: str | os.PathLike[str] = REPO_ROOT,
    echo: Callable[[str], None] | None = None,
) -> LocalStack:
    """Start LocalStack in host mode for this lab and wait until S3 and KMS are healthy.

    If this lab's LocalStack already runs, return it (``owned=False``). Refuse a port that
    something else holds. On failure or timeout, kill what was started and raise a one-line
    LocalStackError pointing at the log. It binds 127.0.0.1 only, with an allow-listed
    environment, serving the lab's own certificate (docs/localstack.md).
    """
    p = paths(lab_dir)
    endpoint = f"http://127.0.0.1:{port}"
    record = _read_pid_file(p.pid)
    if record is not None:
        pid = record["pid"]
        if _alive(pid) and _is_our_localstack(pid, p.data):
            url = str(record.get("endpoint") or endpoint)
            report = _wait_healthy(url, timeout, lambda: _alive(pid))
            if report is None:
                raise LocalStackError(
                    f"this lab's LocalStack (pid {pid}) runs but is not healthy at {url}; "
                    f"see {p.log} or run `hsm-lab localstack stop`"
                )
            ca = p.ca if p.ca.is_file() else None
            return LocalStack(url, pid, p.root, False, report.get("version"), ca=ca)
        p.pid.unlink(missing_ok=True)  # stale: the process is gone or is not ours
    if _port_in_use(port):
        what = "a LocalStack" if is_healthy(health(endpoint, timeout=0.5)) else "something else"
        raise LocalStackError(
            f"port {port} is already in use by {what}: stop it, or set "
            f"{ENDPOINT_ENV}={endpoint} (and {CA_ENV}) to use it, or pick another port"
        )
    python = ensure_venv(root, echo=echo)
    p.data.mkdir(parents=True, exist_ok=True)
    ca = ensure_tls(p.root)
    if p.log.exists() and p.log.stat().st_size:
        os.replace(p.log, p.log.with_name(p.log.name + ".1"))  # keep the previous run's log
    env = localstack_env(
        {
            # hypercorn binds exactly GATEWAY_LISTEN (twisted binds 0.0.0.0): docs/localstack.md
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "SERVICES": SERVICES,
            "OVERRIDE_IN_DOCKER": "0",  # this machine has /.dockerenv
            "FILESYSTEM_ROOT": str(p.data),
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "EAGER_SERVICE_LOADING": "1",
            # the lab's certificate; LocalStack splits it into .key/.crt with its umask (077)
            "CUSTOM_SSL_CERT_PATH": str(p.server_pem),
        }
    )
    began = time.monotonic()
    with p.log.open("ab") as log:
        proc = subprocess.Popen(
            [str(python), "-m", RUNTIME_MODULE],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=p.dir,
            env=env,
            umask=0o077,  # the key file LocalStack writes beside server.pem stays private
            start_new_session=True,  # own session and process group: stop() signals the group
        )
    _CHILDREN[proc.pid] = proc
    record = {
        "pid": proc.pid,
        "port": port,
        "endpoint": endpoint,
        "ca": str(ca),
        "log": str(p.log),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write(p.pid, json.dumps(record, indent=2) + "\n")
    report = _wait_healthy(endpoint, timeout, lambda: proc.poll() is None)
    if report is None:
        code = proc.poll()
        if code is None:
            _terminate(proc.pid, 5.0)
            why = f"not healthy at {endpoint} after {timeout:.0f} s"
        else:
            _CHILDREN.pop(proc.pid, None)
            why = f"exited with code {code} during start"
        p.pid.unlink(missing_ok=True)
        last = _log_tail(p.log)
        raise LocalStackError(
            f"LocalStack {why}; see {p.log}" + (f" (last line: {last[:160]})" if last else "")
        )
    return LocalStack(
        endpoint,
        proc.pid,
        p.root,
        True,
        report.get("version"),
        round(time.monotonic() - began, 2),
        ca=ca,
    )


StopOutcome = Literal["stopped", "killed", "not-running", "stale", "not-ours"]


@dataclass(frozen=True)
class Stopped:
    outcome: StopOutcome
    pid: int | None = None


def stop(lab_dir: str | os.PathLike[str], *, timeout: float = STOP_TIMEOUT) -> Stopped:
    """Stop this lab's LocalStack by the PID in its pid file; remove the pid file.

    Signals the process group (SIGTERM, then SIGKILL after `timeout`), and only if the PID
    is still our LocalStack (cmdline runs localstack.runtime.main with this lab's data dir);
    a PID that now belongs to something else is left alone.
    """
    p = paths(lab_dir)
    if not p.pid.exists():
        return Stopped("not-running")
    record = _read_pid_file(p.pid)
    if record is None:
        p.pid.unlink(missing_ok=True)
        return Stopped("stale")
    pid = record["pid"]
    if not _alive(pid):
        _CHILDREN.pop(pid, None)
        p.pid.unlink(missing_ok=True)
        return Stopped("stale", pid)
    if not _is_our_localstack(pid, p.data):
        p.pid.unlink(missing_ok=True)
        return Stopped("not-ours", pid)
    outcome = _terminate(pid, timeout)
    if _alive(pid):
        raise LocalStackError(f"LocalStack pid {pid} survived SIGKILL; see {p.log}")
    p.pid.unlink(missing_ok=True)
    return Stopped(outcome, pid)


@dataclass(frozen=True)
class Status:
    endpoint: str
    source: str
    healthy: bool
    version: str | None = None
    services: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # from this lab's pid file
    pid_alive: bool = False
    rss_bytes: int | None = None
    log: Path | None = None


def status(lab_dir: str | os.PathLike[str], *, allow_remote: bool = False) -> Status:
    """What runs where: this lab's LocalStack (pid file) or the configured endpoint."""
    p = paths(lab_dir)
    record = _read_pid_file(p.pid)
    pid = record["pid"] if record else None
    ours = pid is not None and _alive(pid) and _is_our_localstack(pid, p.data)
    if ours and record is not None and not os.environ.get(ENDPOINT_ENV, "").strip():
        endpoint = Endpoint(str(record.get("endpoint")), "lab")
    else:
        endpoint = configured_endpoint()
    url = check_endpoint(endpoint.url, allow_remote=allow_remote)
    report = health(url, allow_remote=allow_remote)
    services = {
        name: str(state)
        for name, state in ((report or {}).get("services") or {}).items()
        if state != "disabled"
    }
    return Status(
        url,
        endpoint.source,
        is_healthy(report),
        (report or {}).get("version"),
        services,
        pid,
        ours,
        _rss_bytes(pid) if ours and pid else None,
        p.log if p.log.exists() else None,
    )


def lab_instance(lab_dir: str | os.PathLike[str]) -> LocalStack | None:
    """This lab's own running LocalStack (from its pid file), or None."""
    p = paths(lab_dir)
    record = _read_pid_file(p.pid)
    if record is None or not _alive(record["pid"]) or not _is_our_localstack(record["pid"], p.data):
        return None
    url = str(record.get("endpoint") or f"http://127.0.0.1:{record.get('port', DEFAULT_PORT)}")
    return LocalStack(url, record["pid"], p.root, False, ca=p.ca if p.ca.is_file() else None)


def connect(
    *, allow_remote: bool = False, timeout: float = 2.0, lab_dir: str | os.PathLike[str] | None = None
) -> LocalStack:
    """The LocalStack to use, if it is healthy: $CLEFS_LOCALSTACK_ENDPOINT, else this lab's own
    (its pid file), else the configured endpoint. LocalStackError otherwise."""
    endpoint = configured_endpoint()
    own = lab_instance(lab_dir) if lab_dir is not None and not endpoint.external else None
    url = own.endpoint if own else check_endpoint(endpoint.url, allow_remote=allow_remote)
    source = "lab" if own else endpoint.source
    report = _wait_healthy(url, timeout)
    if report is None:
        hint = (
            f"start it, or unset {ENDPOINT_ENV} to let the lab start one"
            if endpoint.external
            else "start it with `hsm-lab localstack start`"
        )
        raise LocalStackError(f"LocalStack not reachable or not healthy at {url} (from {source}): {hint}")
    ca = own.ca if own else _known_ca(lab_dir)
    return LocalStack(url, own.pid if own else None, version=report.get("version"), source=source, ca=ca)


def _known_ca(lab_dir: str | os.PathLike[str] | None) -> Path | None:
    try:
        return trust_anchor(lab_dir)
    except LocalStackError:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(
    lab_dir: str | os.PathLike[str],
    *,
    allow_remote: bool = False,
    timeout: float = START_TIMEOUT,
    echo: Callable[[str], None] | None = None,
) -> Iterator[LocalStack]:
    """A healthy LocalStack for the duration of the block. Stop what you start.

    With CLEFS_LOCALSTACK_ENDPOINT set it only ever uses that one. Otherwise it uses the
    configured endpoint if it is healthy *and* its certificate can be pinned (this lab's
    LocalStack, or $CLEFS_LOCALSTACK_CA); else it starts one for the lab on loopback (the
    configured port, or a free one when the default port holds a LocalStack it cannot pin)
    and stops it, by PID, on exit.
    """
    endpoint = configured_endpoint()
    url = check_endpoint(endpoint.url, allow_remote=allow_remote)
    if endpoint.external:
        yield connect(allow_remote=allow_remote)
        return
    port = endpoint.port
    report = health(url, allow_remote=allow_remote)
    if is_healthy(report):
        assert report is not None
        own = lab_instance(lab_dir)
        ca = own.ca if own else _known_ca(None)
        if ca is not None:
            yield LocalStack(url, version=report.get("version"), source=endpoint.source, ca=ca)
            return
        if endpoint.source != "default":
            raise LocalStackError(
                f"a LocalStack answers at {url} (from {endpoint.source}) but this lab did not start it: "
                f"its certificate cannot be pinned; set {CA_ENV}, or point {endpoint.source} at a free port"
            )
        port = _free_port()
        if echo:
            echo(f"a LocalStack this lab cannot pin answers at {url}: starting one on port {port}")
    if not is_loopback(url):
        raise LocalStackError(
            f"LocalStack not reachable at {url} (from {endpoint.source}), and the lab only "
            "starts one on loopback: start it there, or unset the endpoint"
        )
    started = start(lab_dir, port, timeout=timeout, echo=echo)
    if endpoint.source != "default" and port == endpoint.port:
        started = replace(started, endpoint=url, source=endpoint.source)
    try:
        yield started
    finally:
        if started.owned:
            stop(lab_dir)

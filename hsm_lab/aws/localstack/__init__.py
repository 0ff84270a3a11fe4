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

The package, one concern a module: ``config`` (pins, ports, environment names, the error),
``endpoints`` (endpoint rules, health), ``files`` (the lab's LocalStack files, pid file),
``handle`` (the ``LocalStack`` a caller gets), ``tls`` (the lab's CA and certificate),
``venv`` (LocalStack's own venv), ``processes`` (environment, PIDs, signals) and
``lifecycle`` (start, stop, status, connect, running). Every public name is importable from
``hsm_lab.aws.localstack`` itself.
"""

from __future__ import annotations

from hsm_lab.aws.localstack.config import (
    CA_ENV,
    DEFAULT_PORT,
    DEFAULT_REGION,
    ENDPOINT_ENV,
    ENV_ALLOW,
    LAB_ENV,
    MIN_PYTHON,
    PINS,
    PYTHON_ENV,
    REPO_ROOT,
    REQUIRED_SERVICES,
    RUNTIME_MODULE,
    SERVICES,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TLS_DAYS,
    VENV_NAME,
    LocalStackError,
)
from hsm_lab.aws.localstack.endpoints import (
    Endpoint,
    check_endpoint,
    configured_endpoint,
    health,
    is_healthy,
    is_loopback,
)
from hsm_lab.aws.localstack.files import (
    LabPaths,
    default_lab,
    paths,
)
from hsm_lab.aws.localstack.handle import (
    LocalStack,
)
from hsm_lab.aws.localstack.lifecycle import (
    Status,
    StopOutcome,
    Stopped,
    connect,
    lab_instance,
    running,
    start,
    status,
    stop,
)
from hsm_lab.aws.localstack.processes import (
    localstack_env,
)
from hsm_lab.aws.localstack.tls import (
    ensure_tls,
    trust_anchor,
)
from hsm_lab.aws.localstack.venv import (
    ensure_venv,
    find_python,
    venv_dir,
)

__all__ = [
    "CA_ENV",
    "DEFAULT_PORT",
    "DEFAULT_REGION",
    "ENDPOINT_ENV",
    "ENV_ALLOW",
    "LAB_ENV",
    "MIN_PYTHON",
    "PINS",
    "PYTHON_ENV",
    "REPO_ROOT",
    "REQUIRED_SERVICES",
    "RUNTIME_MODULE",
    "SERVICES",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "TLS_DAYS",
    "VENV_NAME",
    "Endpoint",
    "LabPaths",
    "LocalStack",
    "LocalStackError",
    "Status",
    "StopOutcome",
    "Stopped",
    "check_endpoint",
    "configured_endpoint",
    "connect",
    "default_lab",
    "ensure_tls",
    "ensure_venv",
    "find_python",
    "health",
    "is_healthy",
    "is_loopback",
    "lab_instance",
    "localstack_env",
    "paths",
    "running",
    "start",
    "status",
    "stop",
    "trust_anchor",
    "venv_dir",
]

"""LocalStack's settings for the lab: pins, ports, services, environment names, the error."""

from __future__ import annotations

import re
from pathlib import Path

from hsm_lab.errors import ClefsError
from infra.model.settings import DEFAULT_PRIMARY_REGION

REPO_ROOT = Path(__file__).resolve().parents[3]
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


class LocalStackError(ClefsError):
    """LocalStack could not be installed, started, reached or stopped (one line, what to do)."""

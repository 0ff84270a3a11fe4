"""The deployed stack as the HSM side sees it: its outputs, and clients to reach it.

Stack outputs (`classes`, `primary_region`, ...) are the contract between the
Pulumi program and everything after it (BYOK, data path, verify). They are
kept in <lab>/stack-outputs.json, written by `hsm-lab stack apply-localstack`
(the LocalStack harness) or `hsm-lab stack outputs` (with the Pulumi CLI).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.fs import atomic_write_text

OUTPUTS_FILE = "stack-outputs.json"
ClientFor = Callable[[str, str], Any]


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


def aws_clients(endpoint: str | None) -> ClientFor:
    """Clients for LocalStack at `endpoint` (dummy credentials), or for real AWS when None."""
    import boto3
    from botocore.config import Config

    cache: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()  # boto3's default session is not thread-safe; the harness is threaded
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"})

    def client_for(service: str, region: str) -> Any:
        with lock:
            return _make(service, region)

    def _make(service: str, region: str) -> Any:
        if (service, region) not in cache:
            if endpoint is None:
                cache[(service, region)] = boto3.client(service, region_name=region, config=config)
            else:
                cache[(service, region)] = boto3.client(
                    service,
                    region_name=region,
                    endpoint_url=endpoint,
                    aws_access_key_id="test",
                    aws_secret_access_key="test",  # noqa: S106 - LocalStack's public dummy credential
                    config=config,
                )
        return cache[(service, region)]

    return client_for

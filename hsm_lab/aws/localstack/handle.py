"""A healthy LocalStack as the rest of the lab sees it: endpoint, CA, clients."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm_lab.aws.localstack.config import CA_ENV, DEFAULT_REGION, ENDPOINT_ENV
from hsm_lab.aws.localstack.endpoints import health, is_loopback
from hsm_lab.aws.localstack.files import paths


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

"""Helpers shared by the tests (one home: a free loopback port, the caller's variables to drop)."""

from __future__ import annotations

import socket

# The caller's LocalStack/AWS settings must not steer the suite: LocalStack users keep
# AWS_ENDPOINT_URL exported, and boto3 and hsm_lab.aws.localstack both honour it.
CALLER_VARIABLES = ("AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "USE_SSL")
CALLER_PREFIXES = ("AWS_ENDPOINT_URL_",)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def is_caller_variable(name: str) -> bool:
    return name in CALLER_VARIABLES or name.startswith(CALLER_PREFIXES)

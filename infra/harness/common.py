"""What every part of the harness shares: its error, endpoint rule, AWS shapes, the Kind table entry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import ClientError

from infra.mocks import reveal

ClientFactory = Callable[[str, str], Any]
"""(service, region) -> boto3 client, as hsm_lab.aws.access.ClientFactory (infra does not import hsm_lab)."""


class HarnessError(RuntimeError):
    """The harness met something it must not or cannot do (one line)."""


def is_loopback_url(url: str) -> bool:
    match = re.match(r"^https?://(\[[^\]]+\]|[^/:]+)(:\d+)?(/.*)?$", url)
    if not match:
        return False
    host = match.group(1).strip("[]").lower()
    return host in {"localhost", "::1"} or re.fullmatch(r"127(\.\d{1,3}){3}", host) is not None


def aws_tags(tags: Mapping[str, Any] | None, kms: bool) -> list[dict[str, str]]:
    """Pulumi tags as the AWS API wants them (KMS: TagKey/TagValue, else Key/Value), sorted."""
    items = sorted((tags or {}).items())
    if kms:
        return [{"TagKey": k, "TagValue": str(v)} for k, v in items]
    return [{"Key": k, "Value": str(v)} for k, v in items]


_SPECIAL = {
    "id": "ID",
    "kmsMasterKeyId": "KMSMasterKeyID",
    "sseAlgorithm": "SSEAlgorithm",
    "replicaKmsKeyId": "ReplicaKmsKeyID",
    "sseKmsEncryptedObjects": "SseKmsEncryptedObjects",
}


def to_s3_shape(value: Any) -> Any:
    """pulumi-aws (camelCase) nested args -> S3 API (PascalCase) shapes."""
    if isinstance(value, Mapping):
        return {
            _SPECIAL.get(k, k[:1].upper() + k[1:]): to_s3_shape(v)
            for k, v in value.items()
            # an empty `filter {}` is meaningful: it makes a replication rule a V2 rule
            if v is not None and v != [] and (v != {} or k == "filter")
        }
    if isinstance(value, list):
        return [to_s3_shape(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Pulumi numbers arrive as floats; S3 wants integers
    return value


def policy_text(value: Any) -> str:
    """A policy input (possibly secret-wrapped, possibly a mapping) as the JSON text AWS takes."""
    value = reveal(value)
    return value if isinstance(value, str) else json.dumps(value)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# What AWS says when a resource of the state is gone.
GONE = frozenset(
    {
        "NotFoundException",
        "NoSuchEntity",
        "NoSuchBucket",
        "404",
        "NotFound",
        "NoSuchEntityException",
        "ResourceNotFoundException",  # EventBridge rules and targets
    }
)


def already_exists(what: str, name: str, region: str) -> HarnessError:
    return HarnessError(
        f"{what} {name} already exists in {region} and does not belong to this stack: `pulumi up` "
        "would fail the same way; delete it, or use the lab (state) that created it"
    )


class Harness(Protocol):
    """What a Kind may use of the harness (infra/harness/localstack_mocks.py: LocalStackMocks)."""

    account_id: str
    suffix: str  # appended to names the program leaves to the provider
    client_for: ClientFactory

    def mark_fresh(self, name: str) -> None: ...

    def is_fresh(self, name: str) -> bool: ...


Create = Callable[[Harness, str, str, dict[str, Any]], tuple[str, dict[str, Any]]]
Exists = Callable[[Harness, str, Mapping[str, Any], str], bool]
Reconcile = Callable[[Harness, str, str, dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """How the harness handles one resource type.

    create(mocks, name, region, inputs) -> (id, outputs): make it (the first apply);
    exists(mocks, id, state record, region) -> bool: is the state's resource still there
    (False when AWS says it is gone, see GONE; other errors raise);
    reconcile(mocks, id, region, inputs, recorded outputs) -> outputs: re-apply every input
    of an existing resource (what `pulumi up` does with a diff).
    """

    create: Create
    exists: Exists
    reconcile: Reconcile

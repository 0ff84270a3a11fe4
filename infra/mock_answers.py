"""What AWS would answer, under Pulumi mocks, for each resource type the program creates.

infra/mocks.py's RecordingMocks asks `answer` for a resource's id and outputs: real-looking ids
and ARNs, derived deterministically from the URN and the resource's provider region.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Per-bucket sub-resources whose Terraform id is the bucket name.
BUCKET_ID_TYPES = frozenset(
    {
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketReplicationConfig:BucketReplicationConfig",
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
    }
)


def urn_hex(seed: str, n: int) -> str:
    """The first `n` hex digits of SHA-256(`seed`): deterministic ids per URN."""
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def answer(
    acct: str, typ: str, name: str, urn: str, region: str | None, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The id and outputs AWS would give a resource of type `typ` (see ANSWERS)."""
    ask = Ask(acct, urn_hex(urn, 32), name, region, inputs, dict(inputs))
    if typ in BUCKET_ID_TYPES:
        return str(inputs.get("bucket")), ask.state
    respond = ANSWERS.get(typ)
    if respond is None:
        return f"{name}-{ask.h[:7]}", ask.state
    return respond(ask), ask.state


@dataclass
class Ask:
    """One resource to answer for: its account, URN hash, name, region, inputs; `state` is the
    outputs being built (the inputs plus what AWS adds)."""

    acct: str
    h: str
    name: str
    region: str | None
    inputs: dict[str, Any]
    state: dict[str, Any]


def _external_key(a: Ask) -> str:
    h = a.h
    key_id = (
        f"mrk-{h}" if a.inputs.get("multiRegion") else f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    )
    a.state.update(
        arn=f"arn:aws:kms:{a.region}:{a.acct}:key/{key_id}",
        keyState="Enabled" if a.inputs.get("keyMaterialBase64") else "PendingImport",
        expirationModel="",
        keyUsage=a.inputs.get("keyUsage", "ENCRYPT_DECRYPT"),
        keySpec=a.inputs.get("keySpec", "SYMMETRIC_DEFAULT"),
        tagsAll=a.inputs.get("tags", {}),
    )
    return key_id


def _replica_external_key(a: Ask) -> str:
    key_id = str(a.inputs.get("primaryKeyArn", "")).rsplit("/", 1)[-1]
    a.state.update(
        arn=f"arn:aws:kms:{a.region}:{a.acct}:key/{key_id}",
        keyId=key_id,
        keyState="Enabled" if a.inputs.get("keyMaterialBase64") else "PendingImport",
        keyUsage="ENCRYPT_DECRYPT",
        tagsAll=a.inputs.get("tags", {}),
    )
    return key_id


def _alias(a: Ask) -> str:
    alias = str(a.inputs.get("name") or f"alias/{a.name}-{a.h[:7]}")
    a.state.update(
        name=alias,
        arn=f"arn:aws:kms:{a.region}:{a.acct}:{alias}",
        targetKeyArn=a.inputs.get("targetKeyId"),
    )
    return alias


def _bucket(a: Ask) -> str:
    bucket = str(a.inputs.get("bucket") or f"{a.name}-{a.h[:7]}")
    a.state.update(
        bucket=bucket,
        arn=f"arn:aws:s3:::{bucket}",
        bucketDomainName=f"{bucket}.s3.amazonaws.com",
        bucketRegionalDomainName=f"{bucket}.s3.{a.region}.amazonaws.com",
        objectLockEnabled=bool(a.inputs.get("objectLockEnabled", False)),
        tagsAll=a.inputs.get("tags", {}),
    )
    return bucket


def _role(a: Ask) -> str:
    role = str(a.inputs.get("name") or f"{a.name}-{a.h[:7]}")
    a.state.update(
        name=role,
        arn=f"arn:aws:iam::{a.acct}:role/{role}",
        uniqueId=f"AROA{a.h[:17].upper()}",
        tagsAll=a.inputs.get("tags", {}),
    )
    return role


def _role_policy(a: Ask) -> str:
    policy = str(a.inputs.get("name") or f"{a.name}-{a.h[:7]}")
    a.state["name"] = policy
    return f"{a.inputs.get('role')}:{policy}"


def _topic(a: Ask) -> str:
    topic = str(a.inputs.get("name") or f"{a.name}-{a.h[:7]}")
    arn = f"arn:aws:sns:{a.region}:{a.acct}:{topic}"
    a.state.update(name=topic, arn=arn, tagsAll=a.inputs.get("tags", {}))
    return arn


def _event_rule(a: Ask) -> str:
    rule = str(a.inputs.get("name") or f"{a.name}-{a.h[:7]}")
    a.state.update(name=rule, arn=f"arn:aws:events:{a.region}:{a.acct}:rule/{rule}")
    return rule


# Per resource type: its id, with `state` completed as AWS would (types not listed, and the
# per-bucket types (BUCKET_ID_TYPES, id: the bucket name), are answered in answer).
ANSWERS: dict[str, Callable[[Ask], str]] = {
    "aws:kms/externalKey:ExternalKey": _external_key,
    "aws:kms/replicaExternalKey:ReplicaExternalKey": _replica_external_key,
    "aws:kms/alias:Alias": _alias,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:iam/role:Role": _role,
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:sns/topic:Topic": _topic,
    "aws:cloudwatch/eventRule:EventRule": _event_rule,
    "aws:cloudwatch/eventTarget:EventTarget": lambda a: f"{a.inputs.get('rule')}-{a.inputs.get('targetId')}",
    "aws:sns/topicPolicy:TopicPolicy": lambda a: str(a.inputs.get("arn")),
}

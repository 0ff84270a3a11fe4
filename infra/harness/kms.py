"""KMS resources in LocalStack: the class keys (EXTERNAL, multi-region, their replicas) and aliases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from infra.harness.common import (
    Harness,
    HarnessError,
    Kind,
    already_exists,
    aws_tags,
    error_code,
    policy_text,
)

EXTERNAL_KEY = "aws:kms/externalKey:ExternalKey"
REPLICA_EXTERNAL_KEY = "aws:kms/replicaExternalKey:ReplicaExternalKey"
ALIAS = "aws:kms/alias:Alias"


def key_policy_and_tags(kms: Any, arn: str, inputs: Mapping[str, Any]) -> None:
    kms.put_key_policy(
        KeyId=arn,
        PolicyName="default",
        Policy=policy_text(inputs["policy"]),
        BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
    )
    if inputs.get("tags"):
        kms.tag_resource(KeyId=arn, Tags=aws_tags(inputs.get("tags"), kms=True))


def _key_outputs(meta: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return meta["KeyId"], {"arn": meta["Arn"], "keyState": meta["KeyState"], "keyId": meta["KeyId"]}


def create_external_key(
    m: Harness, name: str, region: str, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    if inputs.get("keyMaterialBase64"):
        raise HarnessError(f"{name}: key material in a Pulumi input; refusing")
    meta = m.client_for("kms", region).create_key(
        Origin="EXTERNAL",
        MultiRegion=bool(inputs.get("multiRegion")),
        Description=str(inputs.get("description", "")),
        Policy=policy_text(inputs["policy"]),
        Tags=aws_tags(inputs.get("tags"), kms=True),
        BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
    )["KeyMetadata"]
    return _key_outputs(meta)


def create_replica_key(
    m: Harness, name: str, region: str, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    primary_arn = str(inputs["primaryKeyArn"])
    primary_region = primary_arn.split(":")[3]
    meta = m.client_for("kms", primary_region).replicate_key(
        KeyId=primary_arn,
        ReplicaRegion=region,
        Description=str(inputs.get("description", "")),
        Policy=policy_text(inputs["policy"]),
        Tags=aws_tags(inputs.get("tags"), kms=True),
        BypassPolicyLockoutSafetyCheck=bool(inputs.get("bypassPolicyLockoutSafetyCheck", False)),
    )["ReplicaKeyMetadata"]
    # LocalStack ignores Policy and Tags here (docs/localstack.md): apply the replica's own
    key_policy_and_tags(m.client_for("kms", region), meta["Arn"], inputs)
    return _key_outputs(meta)


def key_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    arn = str((record.get("outputs") or {}).get("arn") or rid)
    meta = m.client_for("kms", region).describe_key(KeyId=arn)["KeyMetadata"]
    return meta.get("KeyState") not in ("PendingDeletion", "PendingReplicaDeletion")


def reconcile_key(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    arn = str(recorded.get("arn") or rid)
    kms = m.client_for("kms", region)
    key_policy_and_tags(kms, arn, inputs)
    kms.update_key_description(KeyId=arn, Description=str(inputs.get("description", "")))
    return {"keyState": kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]}


def create_alias(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    alias = str(inputs["name"])
    try:
        m.client_for("kms", region).create_alias(AliasName=alias, TargetKeyId=str(inputs["targetKeyId"]))
    except ClientError as exc:
        if error_code(exc) == "AlreadyExistsException":
            raise already_exists("alias", alias, region) from None
        raise
    return alias, {
        "arn": f"arn:aws:kms:{region}:{m.account_id}:{alias}",
        "targetKeyArn": inputs["targetKeyId"],
    }


def alias_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    pages = m.client_for("kms", region).get_paginator("list_aliases").paginate()
    return any(a["AliasName"] == rid for page in pages for a in page.get("Aliases", []))


def reconcile_alias(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    m.client_for("kms", region).update_alias(AliasName=rid, TargetKeyId=str(inputs["targetKeyId"]))
    return {"targetKeyArn": inputs["targetKeyId"]}


KINDS = {
    EXTERNAL_KEY: Kind(create_external_key, key_exists, reconcile_key),
    REPLICA_EXTERNAL_KEY: Kind(create_replica_key, key_exists, reconcile_key),
    ALIAS: Kind(create_alias, alias_exists, reconcile_alias),
}

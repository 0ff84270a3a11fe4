"""The KMS class key policy and its action sets, as plain dicts (no pulumi import).

Key-policy design (separation of duties, per data class and region):

* the account root delegates only *reading* the key to IAM policies: no use, no import, and
  neither kms:PutKeyPolicy nor kms:ScheduleKeyDeletion, so an IAM administrator (say with
  AdministratorAccess) cannot rewrite the policy and grant themselves Decrypt;
* only the deployer named in the policy (the identity that runs `pulumi up`) may change the
  policy or schedule the key's deletion; it passes KMS's lock-out safety check, and if it is
  lost nobody can change the policy any more (docs/aws.md says what that means);
* key administrators administer (enable, disable, tag, describe) and never use the key nor
  touch its material or its policy;
* the auditor reads the key, its policy, tags and aliases, nothing else;
* the application role may only Encrypt, Decrypt and GenerateDataKey, and only under an
  encryption context bound to its data class: either `data_class=<class>` (direct/envelope use)
  or, through S3 in that region, `aws:s3:arn` of the class's own bucket (SSE-KMS);
* the ceremony role may only GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial;
* the class's S3 replication role may only Decrypt (primary copy) or Encrypt/GenerateDataKey
  (replica copy), through S3, for the class's own buckets;
* explicit denies make these "only"s hold even if someone attaches broad IAM policies later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.model.data_classes import ENCRYPTION_CONTEXT_KEY

Document = dict[str, Any]
VERSION = "2012-10-17"

ADMIN_ACTIONS: tuple[str, ...] = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:ReplicateKey",
)
USE_ACTIONS: tuple[str, ...] = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:Sign",
    "kms:Verify",
    "kms:DeriveSharedSecret",
)
APP_ACTIONS: tuple[str, ...] = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")
# What the root statement delegates to IAM: reading only (docs/aws.md).
ACCOUNT_READ_ACTIONS: tuple[str, ...] = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
)
AUDITOR_ACTIONS: tuple[str, ...] = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListResourceTags",
)
# Only the deployer: changing the policy (and so who may use the key), deleting the key.
POLICY_CHANGE_ACTIONS: tuple[str, ...] = ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion")
KEY_ADMIN_ACTIONS: tuple[str, ...] = tuple(
    a for a in ADMIN_ACTIONS if a not in ("kms:Put*", "kms:ScheduleKeyDeletion")
)
IMPORT_ACTIONS: tuple[str, ...] = (
    "kms:GetParametersForImport",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
)
REPLICATION_SOURCE_KMS_ACTIONS: tuple[str, ...] = ("kms:Decrypt",)
REPLICATION_REPLICA_KMS_ACTIONS: tuple[str, ...] = ("kms:Encrypt", "kms:GenerateDataKey")


def account_root(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def _via_s3(region: str, bucket_arn: str) -> dict[str, Any]:
    return {
        "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"]},
    }


@dataclass(frozen=True)
class _KeyPrincipals:
    """Who the policy of one class key copy names, and what its replication role may do."""

    account_id: str
    region: str
    data_class: str
    admin: str
    app: str
    ceremony: str
    replication: str
    bucket: str
    deployer: str
    auditor: str
    replication_actions: tuple[str, ...]


def key_policy(
    *,
    account_id: str,
    region: str,
    data_class: str,
    copy: str,
    admin_arn: str,
    app_arn: str,
    ceremony_arn: str,
    replication_role_arn: str,
    bucket_arn: str,
    deployer_arn: str,
    auditor_arn: str,
) -> Document:
    """Key policy for one class key copy (`copy` is "primary" or "replica") in `region`.

    Statements in this order: who may administer and read, who may use or import, whom
    everything else is denied to, and what each role is denied beyond its job.
    """
    if copy not in ("primary", "replica"):
        raise ValueError(f"copy must be 'primary' or 'replica', got {copy!r}")
    p = _KeyPrincipals(
        account_id,
        region,
        data_class,
        admin_arn,
        app_arn,
        ceremony_arn,
        replication_role_arn,
        bucket_arn,
        deployer_arn,
        auditor_arn,
        REPLICATION_SOURCE_KMS_ACTIONS if copy == "primary" else REPLICATION_REPLICA_KMS_ACTIONS,
    )
    return {
        "Version": VERSION,
        "Id": f"clefs-{data_class}-{copy}",
        "Statement": [
            *_administration_allows(p),
            *_use_and_import_allows(p),
            *_denies_to_all_but(p),
            *_denies_beyond_each_role(p),
        ],
    }


def _administration_allows(p: _KeyPrincipals) -> list[Document]:
    return [
        {
            "Sid": "AccountReadsThroughIamOnly",
            "Effect": "Allow",
            "Principal": {"AWS": account_root(p.account_id)},
            "Action": list(ACCOUNT_READ_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "DeployerManagesTheKeyAndItsPolicy",
            "Effect": "Allow",
            "Principal": {"AWS": p.deployer},
            "Action": list(ADMIN_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "KeyAdministrators",
            "Effect": "Allow",
            "Principal": {"AWS": p.admin},
            "Action": list(KEY_ADMIN_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "AuditorReadsTheKey",
            "Effect": "Allow",
            "Principal": {"AWS": p.auditor},
            "Action": list(AUDITOR_ACTIONS),
            "Resource": "*",
        },
    ]


def _use_and_import_allows(p: _KeyPrincipals) -> list[Document]:
    return [
        {
            "Sid": "AppUsesKeyForItsDataClass",
            "Effect": "Allow",
            "Principal": {"AWS": p.app},
            "Action": list(APP_ACTIONS),
            "Resource": "*",
            "Condition": {"StringEquals": {f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": p.data_class}},
        },
        {
            "Sid": "AppUsesKeyThroughS3ForItsDataClassBucket",
            "Effect": "Allow",
            "Principal": {"AWS": p.app},
            "Action": list(APP_ACTIONS),
            "Resource": "*",
            "Condition": _via_s3(p.region, p.bucket),
        },
        {
            "Sid": "S3ReplicationOfItsDataClassBucket",
            "Effect": "Allow",
            "Principal": {"AWS": p.replication},
            "Action": list(p.replication_actions),
            "Resource": "*",
            "Condition": _via_s3(p.region, p.bucket),
        },
        {
            "Sid": "CeremonyImportsKeyMaterial",
            "Effect": "Allow",
            "Principal": {"AWS": p.ceremony},
            "Action": list(IMPORT_ACTIONS),
            "Resource": "*",
        },
    ]


def _denies_to_all_but(p: _KeyPrincipals) -> list[Document]:
    """Explicit denies to every principal but the one(s) whose job it is."""
    return [
        {
            "Sid": "DenyUseToAllButAppAndReplication",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(USE_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [p.app, p.replication]}},
        },
        {
            "Sid": "DenyKeyMaterialToAllButCeremony",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(IMPORT_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": p.ceremony}},
        },
        {
            "Sid": "DenyPolicyChangesToAllButTheDeployer",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": list(POLICY_CHANGE_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": p.deployer}},
        },
    ]


def _denies_beyond_each_role(p: _KeyPrincipals) -> list[Document]:
    """Explicit denies of everything beyond each role's job (and of self-serve grants)."""
    return [
        {
            "Sid": "AuditorOnlyReads",
            "Effect": "Deny",
            "Principal": {"AWS": p.auditor},
            "NotAction": list(AUDITOR_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "DenyGrantsExceptForAwsServices",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["kms:CreateGrant"],
            "Resource": "*",
            "Condition": {"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}},
        },
        {
            "Sid": "AdministratorsNeverUseTheKeyNorItsMaterial",
            "Effect": "Deny",
            "Principal": {"AWS": p.admin},
            "Action": list(USE_ACTIONS + IMPORT_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "AppOnlyEncryptsDecryptsGeneratesDataKeys",
            "Effect": "Deny",
            "Principal": {"AWS": p.app},
            "NotAction": list(APP_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "CeremonyOnlyHandlesKeyMaterial",
            "Effect": "Deny",
            "Principal": {"AWS": p.ceremony},
            "NotAction": list(IMPORT_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "ReplicationRoleOnlyReplicates",
            "Effect": "Deny",
            "Principal": {"AWS": p.replication},
            "NotAction": list(p.replication_actions),
            "Resource": "*",
        },
    ]

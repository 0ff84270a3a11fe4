"""IAM, KMS and S3 policy documents, as plain dicts (no pulumi import: unit-testable on its own).

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

REPLICATION_SOURCE_BUCKET_ACTIONS = ("s3:GetReplicationConfiguration", "s3:ListBucket")
REPLICATION_SOURCE_OBJECT_ACTIONS = (
    "s3:GetObjectVersionForReplication",
    "s3:GetObjectVersionAcl",
    "s3:GetObjectVersionTagging",
)
REPLICATION_DESTINATION_OBJECT_ACTIONS = (
    "s3:ReplicateObject",
    "s3:ReplicateDelete",
    "s3:ReplicateTags",
)


def account_root(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:root"


def _via_s3(region: str, bucket_arn: str) -> dict[str, Any]:
    return {
        "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/*"]},
    }


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
    """Key policy for one class key copy (`copy` is "primary" or "replica") in `region`."""
    if copy not in ("primary", "replica"):
        raise ValueError(f"copy must be 'primary' or 'replica', got {copy!r}")
    replication_actions = (
        REPLICATION_SOURCE_KMS_ACTIONS if copy == "primary" else REPLICATION_REPLICA_KMS_ACTIONS
    )
    everyone = {"AWS": "*"}
    return {
        "Version": VERSION,
        "Id": f"clefs-{data_class}-{copy}",
        "Statement": [
            {
                "Sid": "AccountReadsThroughIamOnly",
                "Effect": "Allow",
                "Principal": {"AWS": account_root(account_id)},
                "Action": list(ACCOUNT_READ_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "DeployerManagesTheKeyAndItsPolicy",
                "Effect": "Allow",
                "Principal": {"AWS": deployer_arn},
                "Action": list(ADMIN_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "KeyAdministrators",
                "Effect": "Allow",
                "Principal": {"AWS": admin_arn},
                "Action": list(KEY_ADMIN_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "AuditorReadsTheKey",
                "Effect": "Allow",
                "Principal": {"AWS": auditor_arn},
                "Action": list(AUDITOR_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "AppUsesKeyForItsDataClass",
                "Effect": "Allow",
                "Principal": {"AWS": app_arn},
                "Action": list(APP_ACTIONS),
                "Resource": "*",
                "Condition": {
                    "StringEquals": {f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": data_class}
                },
            },
            {
                "Sid": "AppUsesKeyThroughS3ForItsDataClassBucket",
                "Effect": "Allow",
                "Principal": {"AWS": app_arn},
                "Action": list(APP_ACTIONS),
                "Resource": "*",
                "Condition": _via_s3(region, bucket_arn),
            },
            {
                "Sid": "S3ReplicationOfItsDataClassBucket",
                "Effect": "Allow",
                "Principal": {"AWS": replication_role_arn},
                "Action": list(replication_actions),
                "Resource": "*",
                "Condition": _via_s3(region, bucket_arn),
            },
            {
                "Sid": "CeremonyImportsKeyMaterial",
                "Effect": "Allow",
                "Principal": {"AWS": ceremony_arn},
                "Action": list(IMPORT_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "DenyUseToAllButAppAndReplication",
                "Effect": "Deny",
                "Principal": everyone,
                "Action": list(USE_ACTIONS),
                "Resource": "*",
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [app_arn, replication_role_arn]}},
            },
            {
                "Sid": "DenyKeyMaterialToAllButCeremony",
                "Effect": "Deny",
                "Principal": everyone,
                "Action": list(IMPORT_ACTIONS),
                "Resource": "*",
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": ceremony_arn}},
            },
            {
                "Sid": "DenyPolicyChangesToAllButTheDeployer",
                "Effect": "Deny",
                "Principal": everyone,
                "Action": list(POLICY_CHANGE_ACTIONS),
                "Resource": "*",
                "Condition": {"ArnNotEquals": {"aws:PrincipalArn": deployer_arn}},
            },
            {
                "Sid": "AuditorOnlyReads",
                "Effect": "Deny",
                "Principal": {"AWS": auditor_arn},
                "NotAction": list(AUDITOR_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "DenyGrantsExceptForAwsServices",
                "Effect": "Deny",
                "Principal": everyone,
                "Action": ["kms:CreateGrant"],
                "Resource": "*",
                "Condition": {"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}},
            },
            {
                "Sid": "AdministratorsNeverUseTheKeyNorItsMaterial",
                "Effect": "Deny",
                "Principal": {"AWS": admin_arn},
                "Action": list(USE_ACTIONS + IMPORT_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "AppOnlyEncryptsDecryptsGeneratesDataKeys",
                "Effect": "Deny",
                "Principal": {"AWS": app_arn},
                "NotAction": list(APP_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "CeremonyOnlyHandlesKeyMaterial",
                "Effect": "Deny",
                "Principal": {"AWS": ceremony_arn},
                "NotAction": list(IMPORT_ACTIONS),
                "Resource": "*",
            },
            {
                "Sid": "ReplicationRoleOnlyReplicates",
                "Effect": "Deny",
                "Principal": {"AWS": replication_role_arn},
                "NotAction": list(replication_actions),
                "Resource": "*",
            },
        ],
    }


def tls_only_statements(bucket_arn: str) -> list[Document]:
    resources = [bucket_arn, f"{bucket_arn}/*"]
    return [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyTlsBelow12",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
    ]


def sse_kms_put_statements(bucket_arn: str, key_arn: str) -> list[Document]:
    """Every PutObject must ask for SSE-KMS under the class key (by ARN)."""
    objects = f"{bucket_arn}/*"
    return [
        {
            "Sid": "DenyPutWithoutSseKms",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
        },
        {
            "Sid": "DenyPutUnderAnotherKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}},
        },
    ]


def class_bucket_policy(bucket_arn: str, key_arn: str) -> Document:
    return {
        "Version": VERSION,
        "Statement": tls_only_statements(bucket_arn) + sse_kms_put_statements(bucket_arn, key_arn),
    }


def transcript_bucket_policy(bucket_arn: str) -> Document:
    return {"Version": VERSION, "Statement": tls_only_statements(bucket_arn)}


def role_trust_policy(principals: list[str], *, require_mfa: bool) -> Document:
    statement: Document = {
        "Effect": "Allow",
        "Principal": {"AWS": principals},
        "Action": "sts:AssumeRole",
    }
    if require_mfa:
        statement["Condition"] = {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
    return {"Version": VERSION, "Statement": [statement]}


def replication_trust_policy(account_id: str, source_bucket_arn: str) -> Document:
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account_id},
                    "ArnEquals": {"aws:SourceArn": source_bucket_arn},
                },
            }
        ],
    }


def replication_role_policy(source_bucket_arn: str, destination_bucket_arn: str) -> Document:
    """S3 side of replication; the KMS side is granted by the two key policies only."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ReadReplicationConfiguration",
                "Effect": "Allow",
                "Action": list(REPLICATION_SOURCE_BUCKET_ACTIONS),
                "Resource": source_bucket_arn,
            },
            {
                "Sid": "ReadSourceObjectVersions",
                "Effect": "Allow",
                "Action": list(REPLICATION_SOURCE_OBJECT_ACTIONS),
                "Resource": f"{source_bucket_arn}/*",
            },
            {
                "Sid": "WriteReplicas",
                "Effect": "Allow",
                "Action": list(REPLICATION_DESTINATION_OBJECT_ACTIONS),
                "Resource": f"{destination_bucket_arn}/*",
            },
        ],
    }


def auditor_role_policy() -> Document:
    """What `hsm-lab verify --aws` needs, read-only: KMS reads, S3 configuration and object listing.

    The auditor cannot decrypt: SSE-KMS object bodies stay out of its reach (HEAD works, GET
    is refused by KMS), so on AWS `verify` says which cells it could not read (docs/aws.md).
    """
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "ReadKeys", "Effect": "Allow", "Action": list(AUDITOR_ACTIONS), "Resource": "*"},
            {
                "Sid": "ReadBucketConfiguration",
                "Effect": "Allow",
                "Action": [
                    "s3:GetBucketPolicy",
                    "s3:GetBucketVersioning",
                    "s3:GetBucketPublicAccessBlock",
                    "s3:GetEncryptionConfiguration",
                    "s3:GetReplicationConfiguration",
                    "s3:GetBucketObjectLockConfiguration",
                    "s3:GetBucketOwnershipControls",
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketVersions",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ReadObjectMetadata",
                "Effect": "Allow",
                # GetObject allows HEAD (metadata); a body under SSE-KMS still needs kms:Decrypt, which the
                # class key policies deny to the auditor. Transcripts (SSE-S3) it reads in full.
                "Action": [
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:GetObjectAttributes",
                    "s3:GetObjectRetention",
                ],
                "Resource": "*",
            },
        ],
    }


def transcript_writer_policy(bucket_arn: str) -> Document:
    """The ceremony role writes (and reads back) transcripts; Object Lock keeps them (compliance mode)."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ArchiveTranscripts",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectRetention"],
                "Resource": f"{bucket_arn}/transcripts/*",
            },
            {"Sid": "ListTranscripts", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn},
        ],
    }

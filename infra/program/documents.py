"""IAM, KMS and S3 policy documents, as plain dicts (no pulumi import: unit-testable on its own).

The KMS class key policy, its design (separation of duties) and its action sets live in
infra/program/kms_documents.py and are re-exported here; this module holds the S3 bucket
policies and the IAM trust and role policies.
"""

from __future__ import annotations

from infra.program.kms_documents import (
    ACCOUNT_READ_ACTIONS,
    ADMIN_ACTIONS,
    APP_ACTIONS,
    AUDITOR_ACTIONS,
    IMPORT_ACTIONS,
    KEY_ADMIN_ACTIONS,
    POLICY_CHANGE_ACTIONS,
    REPLICATION_REPLICA_KMS_ACTIONS,
    REPLICATION_SOURCE_KMS_ACTIONS,
    USE_ACTIONS,
    VERSION,
    Document,
    account_root,
    key_policy,
)

__all__ = [
    "ACCOUNT_READ_ACTIONS",
    "ADMIN_ACTIONS",
    "APP_ACTIONS",
    "AUDITOR_ACTIONS",
    "IMPORT_ACTIONS",
    "KEY_ADMIN_ACTIONS",
    "POLICY_CHANGE_ACTIONS",
    "REPLICATION_DESTINATION_OBJECT_ACTIONS",
    "REPLICATION_REPLICA_KMS_ACTIONS",
    "REPLICATION_SOURCE_BUCKET_ACTIONS",
    "REPLICATION_SOURCE_KMS_ACTIONS",
    "REPLICATION_SOURCE_OBJECT_ACTIONS",
    "USE_ACTIONS",
    "VERSION",
    "Document",
    "account_root",
    "auditor_role_policy",
    "class_bucket_policy",
    "key_policy",
    "replication_role_policy",
    "replication_trust_policy",
    "role_trust_policy",
    "sse_kms_put_statements",
    "tls_only_statements",
    "transcript_bucket_policy",
    "transcript_writer_policy",
]

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

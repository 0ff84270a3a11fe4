"""Bucket for key-ceremony transcripts: WORM (Object Lock, compliance mode), primary region."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.model.data_classes import COPY_PRIMARY, PURPOSE_TRANSCRIPTS, TAG_COPY, TAG_PURPOSE
from infra.model.settings import StackSettings
from infra.program import documents
from infra.program._opts import child, json_output
from infra.program.storage import harden_bucket

OBJECT_LOCK_MODE = "COMPLIANCE"


class TranscriptBucket(pulumi.ComponentResource):
    """Versioned, Object-Lock (COMPLIANCE) bucket; SSE-S3 since no data-class key applies."""

    bucket: aws.s3.Bucket

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        provider: aws.Provider,
        ceremony_role: aws.iam.Role | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:TranscriptBucket", name, None, opts)
        logical = f"{name}-{settings.primary_region}"
        self.bucket = aws.s3.Bucket(
            logical,
            object_lock_enabled=True,
            tags={TAG_PURPOSE: PURPOSE_TRANSCRIPTS, TAG_COPY: COPY_PRIMARY},
            opts=child(self, provider),
        )
        versioning, public_access, _ = harden_bucket(self, logical, self.bucket, provider)
        aws.s3.BucketObjectLockConfiguration(
            f"{logical}-object-lock",
            bucket=self.bucket.id,
            object_lock_enabled="Enabled",
            rule={
                "default_retention": {
                    "mode": OBJECT_LOCK_MODE,
                    "days": settings.transcript_retention_days,
                }
            },
            opts=child(self, provider, depends_on=[versioning]),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{logical}-encryption",
            bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child(self, provider),
        )
        aws.s3.BucketPolicy(
            f"{logical}-policy",
            bucket=self.bucket.id,
            policy=json_output(documents.transcript_bucket_policy, bucket_arn=self.bucket.arn),
            opts=child(self, provider, depends_on=[public_access]),
        )
        if ceremony_role is not None:  # the ceremony archives its record here (hsm_lab/archive.py)
            aws.iam.RolePolicy(
                f"{logical}-ceremony-writes",
                role=ceremony_role.id,
                policy=json_output(documents.transcript_writer_policy, bucket_arn=self.bucket.arn),
                opts=child(self, provider),
            )
        self.register_outputs(
            {
                "bucket": self.bucket.bucket,
                "object_lock_mode": OBJECT_LOCK_MODE,
                "retention_days": settings.transcript_retention_days,
            }
        )

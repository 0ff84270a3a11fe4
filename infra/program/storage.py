"""Per data class storage: one bucket per region, and its binding to the class key.

Two components because of a real dependency order: the key policies name the class buckets
(S3-mediated use is limited to the class's own bucket) and the class replication role, while
the bucket encryption, bucket policy and replication need the keys. So:

    ClassStorage (buckets, versioning, public-access block, ownership, replication role)
      -> ClassKey (keys/policies/aliases, infra/program/keys.py)
      -> ClassProtection (SSE-KMS + bucket keys, TLS/SSE bucket policy, replication + role policy)
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.model.data_classes import (
    COPY_PRIMARY,
    COPY_REPLICA,
    PURPOSE_CLASS_DATA,
    TAG_COPY,
    TAG_DATA_CLASS,
    TAG_PURPOSE,
    DataClass,
)
from infra.model.settings import StackSettings, class_bucket_logical_name
from infra.program import documents
from infra.program._opts import child, json_output
from infra.program.keys import ClassKey
from infra.program.providers import RegionalProviders


def harden_bucket(
    parent: pulumi.Resource, name: str, bucket: aws.s3.Bucket, provider: aws.Provider
) -> tuple[aws.s3.BucketVersioning, aws.s3.BucketPublicAccessBlock, aws.s3.BucketOwnershipControls]:
    """Versioning on, all four public-access blocks, ACLs disabled (BucketOwnerEnforced)."""
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=child(parent, provider),
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child(parent, provider),
    )
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=child(parent, provider),
    )
    return versioning, public_access, ownership


class ClassStorage(pulumi.ComponentResource):
    buckets: dict[str, aws.s3.Bucket]
    versioning: dict[str, aws.s3.BucketVersioning]
    public_access: dict[str, aws.s3.BucketPublicAccessBlock]
    replication_role: aws.iam.Role

    def __init__(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:ClassStorage", dc.name, None, opts)
        self.regions = settings.regions
        self.buckets, self.versioning, self.public_access = {}, {}, {}
        for region, copy in zip(settings.regions, (COPY_PRIMARY, COPY_REPLICA), strict=True):
            name = class_bucket_logical_name(dc.name, region, settings.namespace)
            provider = providers.for_region(region)
            bucket = aws.s3.Bucket(
                name,
                tags={TAG_DATA_CLASS: dc.name, TAG_PURPOSE: PURPOSE_CLASS_DATA, TAG_COPY: copy},
                opts=child(self, provider),
            )
            versioning, public_access, _ = harden_bucket(self, name, bucket, provider)
            self.buckets[region] = bucket
            self.versioning[region] = versioning
            self.public_access[region] = public_access

        source = self.buckets[settings.primary_region]
        self.replication_role = aws.iam.Role(
            f"clefs-{dc.name}-replication",
            description=f"S3 replication of data class {dc.name} ({settings.primary_region} -> "
            f"{settings.replica_region})",
            assume_role_policy=json_output(
                documents.replication_trust_policy,
                account_id=account_id,
                source_bucket_arn=source.arn,
            ),
            tags={TAG_DATA_CLASS: dc.name, "clefs:role": "replication"},
            opts=child(self, providers.primary),
        )
        self.register_outputs(
            {
                "data_class": dc.name,
                "buckets": {region: b.bucket for region, b in self.buckets.items()},
                "bucket_arns": self.bucket_arns,
                "replication_role": self.replication_role.arn,
            }
        )

    @property
    def bucket_arns(self) -> dict[str, pulumi.Output[str]]:
        return {region: b.arn for region, b in self.buckets.items()}


class ClassProtection(pulumi.ComponentResource):
    encryption: dict[str, aws.s3.BucketServerSideEncryptionConfiguration]
    policies: dict[str, aws.s3.BucketPolicy]
    replication: aws.s3.BucketReplicationConfig

    def __init__(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        storage: ClassStorage,
        key: ClassKey,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:ClassProtection", dc.name, None, opts)
        primary_region, replica_region = settings.regions
        key_arns = key.key_arns
        self.encryption, self.policies = {}, {}
        for region in settings.regions:
            self._encrypt_and_restrict(dc, settings, providers, storage, region, key_arns[region])
        source, destination = storage.buckets[primary_region], storage.buckets[replica_region]
        self.replication = self._replicate_to_replica(
            dc, settings, providers, storage, key_arns[replica_region]
        )
        self.register_outputs(
            {
                "data_class": dc.name,
                "sse_kms_keys": key_arns,
                "replication": {
                    "source": source.bucket,
                    "destination": destination.bucket,
                    "replica_kms_key": key_arns[replica_region],
                },
            }
        )

    def _encrypt_and_restrict(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        storage: ClassStorage,
        region: str,
        key_arn: pulumi.Output[str],
    ) -> None:
        """SSE-KMS under the class key with bucket keys on, and the TLS-only/SSE-KMS bucket policy."""
        name = class_bucket_logical_name(dc.name, region, settings.namespace)
        provider = providers.for_region(region)
        bucket = storage.buckets[region]
        self.encryption[region] = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": key_arn,
                    },
                    "bucket_key_enabled": True,
                }
            ],
            opts=child(self, provider),
        )
        self.policies[region] = aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=json_output(documents.class_bucket_policy, bucket_arn=bucket.arn, key_arn=key_arn),
            opts=child(self, provider, depends_on=[storage.public_access[region]]),
        )

    def _replicate_to_replica(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        storage: ClassStorage,
        replica_key_arn: pulumi.Output[str],
    ) -> aws.s3.BucketReplicationConfig:
        """The replication role's S3 policy, and the primary bucket's replication to the replica
        bucket under the replica class key."""
        primary_region, replica_region = settings.regions
        source, destination = storage.buckets[primary_region], storage.buckets[replica_region]
        role_policy = aws.iam.RolePolicy(
            f"clefs-{dc.name}-replication",
            role=storage.replication_role.id,
            policy=json_output(
                documents.replication_role_policy,
                source_bucket_arn=source.arn,
                destination_bucket_arn=destination.arn,
            ),
            opts=child(self, providers.primary),
        )
        return aws.s3.BucketReplicationConfig(
            f"{class_bucket_logical_name(dc.name, primary_region, settings.namespace)}-replication",
            bucket=source.id,
            role=storage.replication_role.arn,
            rules=[
                {
                    "id": f"{dc.name}-to-{replica_region}",
                    "status": "Enabled",
                    "priority": 1,
                    "filter": {},
                    "delete_marker_replication": {"status": "Enabled"},
                    "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                    "destination": {
                        "bucket": destination.arn,
                        "encryption_configuration": {"replica_kms_key_id": replica_key_arn},
                    },
                }
            ],
            opts=child(
                self,
                providers.primary,
                depends_on=[*storage.versioning.values(), role_policy],
            ),
        )

"""S3 resources in LocalStack: buckets and their per-bucket configurations (id: the bucket name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from infra.harness.common import (
    Create,
    Harness,
    Kind,
    already_exists,
    aws_tags,
    error_code,
    policy_text,
    to_s3_shape,
)

BUCKET = "aws:s3/bucket:Bucket"


def create_bucket(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket") or f"{name}-{m.suffix}").lower()[:63]
    request: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if inputs.get("objectLockEnabled"):
        request["ObjectLockEnabledForBucket"] = True
    s3 = m.client_for("s3", region)
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise already_exists("bucket", bucket, region) from None
        raise
    m.mark_fresh(bucket)
    if inputs.get("tags"):
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": aws_tags(inputs["tags"], kms=False)})
    return bucket, {
        "bucket": bucket,
        "arn": f"arn:aws:s3:::{bucket}",
        "bucketRegionalDomainName": f"{bucket}.s3.{region}.amazonaws.com",
        "region": region,
    }


def bucket_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    m.client_for("s3", region).head_bucket(Bucket=rid)
    return True


def reconcile_bucket(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    if inputs.get("tags"):
        m.client_for("s3", region).put_bucket_tagging(
            Bucket=rid, Tagging={"TagSet": aws_tags(inputs["tags"], kms=False)}
        )
    return {}


# -- per-bucket configurations: each create is an idempotent put on the bucket ----------------
def put_encryption(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    m.client_for("s3", region).put_bucket_encryption(
        Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": to_s3_shape(inputs["rules"])}
    )
    return bucket, {}


def put_versioning(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    m.client_for("s3", region).put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration=to_s3_shape(inputs["versioningConfiguration"])
    )
    return bucket, {}


def put_public_access_block(
    m: Harness, name: str, region: str, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    m.client_for("s3", region).put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={k[:1].upper() + k[1:]: bool(inputs.get(k)) for k in keys},
    )
    return bucket, {}


def put_ownership(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    m.client_for("s3", region).put_bucket_ownership_controls(
        Bucket=bucket,
        OwnershipControls=to_s3_shape(inputs["rule"]) and {"Rules": [to_s3_shape(inputs["rule"])]},
    )
    return bucket, {}


def put_policy(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    m.client_for("s3", region).put_bucket_policy(Bucket=bucket, Policy=policy_text(inputs["policy"]))
    return bucket, {}


def put_replication(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    m.client_for("s3", region).put_bucket_replication(
        Bucket=bucket,
        ReplicationConfiguration={"Role": str(inputs["role"]), "Rules": to_s3_shape(inputs["rules"])},
    )
    return bucket, {}


def put_object_lock(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    bucket = str(inputs.get("bucket", ""))
    config: dict[str, Any] = {"ObjectLockEnabled": str(inputs.get("objectLockEnabled", "Enabled"))}
    if inputs.get("rule"):
        config["Rule"] = to_s3_shape(inputs["rule"])
    m.client_for("s3", region).put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    return bucket, {}


def config_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    if m.is_fresh(rid):
        return False  # a per-bucket resource of a bucket this run recreated
    return bucket_exists(m, rid, record, region)


def _reconcile_by_put(put: Create) -> Kind:
    def reconcile(
        m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
    ) -> dict[str, Any]:
        return put(m, rid, region, inputs)[1]

    return Kind(put, config_exists, reconcile)


KINDS = {
    BUCKET: Kind(create_bucket, bucket_exists, reconcile_bucket),
    **{
        typ: _reconcile_by_put(put)
        for typ, put in (
            (
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                put_encryption,
            ),
            ("aws:s3/bucketVersioning:BucketVersioning", put_versioning),
            ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", put_public_access_block),
            ("aws:s3/bucketOwnershipControls:BucketOwnershipControls", put_ownership),
            ("aws:s3/bucketPolicy:BucketPolicy", put_policy),
            ("aws:s3/bucketReplicationConfig:BucketReplicationConfig", put_replication),
            ("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", put_object_lock),
        )
    },
}

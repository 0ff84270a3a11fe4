"""What the rules read: resource type tokens, Clefs component tokens and property access.

Shared by the resource rules (policy/resource_rules.py), the stack rules
(policy/stack_rules.py) and the document probes (policy/bucket_policy.py, policy/key_policy.py).
Property values may be plain Python or pulumi-policy proxies: every accessor tolerates both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import PolicyResource

from infra.model.settings import DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION

DEFAULT_ALLOWED_REGIONS = (DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION)

PROVIDER = "pulumi:providers:aws"
STACK = "pulumi:pulumi:Stack"
BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
PUBLIC_ACCESS = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
EXTERNAL_KEY = "aws:kms/externalKey:ExternalKey"
REPLICA_EXTERNAL_KEY = "aws:kms/replicaExternalKey:ReplicaExternalKey"
KMS_KEY_TYPES = (
    EXTERNAL_KEY,
    REPLICA_EXTERNAL_KEY,
    "aws:kms/key:Key",
    "aws:kms/replicaKey:ReplicaKey",
)
C_PROVIDERS = "clefs:infra:RegionalProviders"
C_ROLES = "clefs:infra:Roles"
C_DATA_CLASS = "clefs:infra:DataClass"
PUBLIC_ACCESS_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)


def prop(value: Any, *path: str | int) -> Any:
    """Nested get over mappings/sequences (also pulumi-policy proxies); None when absent."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) <= step:
                return None
            value = value[step]
        else:
            if not isinstance(value, Mapping) or step not in value:
                return None
            value = value[step]
    return value


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return value is True


def tags_of(props: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = prop(props, "tags") or prop(props, "tagsAll")
    return tags if isinstance(tags, Mapping) else {}


def json_doc(value: Any) -> Mapping[str, Any] | None:
    """A policy document given as a mapping or a JSON string; None when it is neither."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, Mapping) else None


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def allowed_regions_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The policy config's allowedRegions, or the default primary and replica regions."""
    regions = config.get("allowedRegions")
    if isinstance(regions, Sequence) and not isinstance(regions, str) and regions:
        return tuple(str(r) for r in regions)
    return DEFAULT_ALLOWED_REGIONS


def provider_region(provider: Any) -> str | None:
    if provider is None:
        return None
    region = prop(provider.props, "region")
    return str(region) if isinstance(region, str) else None


def uses_default_provider(provider: Any) -> bool:
    return provider is None or str(provider.name).startswith("default")


def region_of(resource: PolicyResource) -> str | None:
    region = prop(resource.props, "region")
    if isinstance(region, str) and region:
        return region
    return provider_region(resource.provider)


def bucket_name(bucket: PolicyResource) -> str:
    return str(prop(bucket.props, "bucket") or bucket.name)

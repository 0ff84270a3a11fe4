"""Clefs invariants as pulumi-policy rules (importable; the PolicyPack is built in __main__.py).

Resource rules (policy/resource_rules.py) see one resource's inputs (they run at preview too);
stack rules (policy/stack_rules.py) see every resource's outputs after `pulumi up` and check
relationships (bucket <-> class key <-> region). Both read properties through policy/props.py
and probe policy documents with policy/bucket_policy.py and policy/key_policy.py.
Every validator can be called directly with hand-built ResourceValidationArgs /
StackValidationArgs; policy/offline.py feeds them a graph recorded under Pulumi mocks.

This module lists the pack's policies (`all_policies`) and re-exports the rules' public names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from policy.bucket_policy import sse_kms_put_problems, tls_problems
from policy.key_policy import key_policy_findings
from policy.props import (
    BUCKET,
    BUCKET_POLICY,
    C_DATA_CLASS,
    C_PROVIDERS,
    C_ROLES,
    DEFAULT_ALLOWED_REGIONS,
    EXTERNAL_KEY,
    KMS_KEY_TYPES,
    OWNERSHIP,
    PROVIDER,
    PUBLIC_ACCESS,
    PUBLIC_ACCESS_FLAGS,
    REPLICA_EXTERNAL_KEY,
    REPLICATION,
    SSE,
    STACK,
    VERSIONING,
    bucket_arn,
    bucket_name,
    region_of,
)
from policy.resource_rules import (
    validate_bucket_policy_tls,
    validate_class_key_multi_region,
    validate_explicit_regional_provider,
    validate_no_key_material,
    validate_ownership,
    validate_public_access_block,
    validate_versioning,
)
from policy.stack_rules import (
    KEY_POLICY_ROLES,
    StackModel,
    validate_buckets_public_access_blocked,
    validate_buckets_tls_only,
    validate_buckets_versioned,
    validate_class_bucket_encryption,
    validate_class_buckets_replicated,
    validate_end_to_end_flag,
    validate_key_separation_of_duties,
    validate_regions_within_config,
)

__all__ = [
    "BUCKET",
    "BUCKET_POLICY",
    "C_DATA_CLASS",
    "C_PROVIDERS",
    "C_ROLES",
    "DEFAULT_ALLOWED_REGIONS",
    "EXTERNAL_KEY",
    "KEY_POLICY_ROLES",
    "KMS_KEY_TYPES",
    "OWNERSHIP",
    "POLICY_PACK_NAME",
    "PROVIDER",
    "PUBLIC_ACCESS",
    "PUBLIC_ACCESS_FLAGS",
    "REPLICATION",
    "REPLICA_EXTERNAL_KEY",
    "SSE",
    "STACK",
    "VERSIONING",
    "StackModel",
    "all_policies",
    "bucket_arn",
    "bucket_name",
    "key_policy_findings",
    "policy_names",
    "region_of",
    "resource_policies",
    "sse_kms_put_problems",
    "stack_policies",
    "tls_problems",
    "validate_bucket_policy_tls",
    "validate_buckets_public_access_blocked",
    "validate_buckets_tls_only",
    "validate_buckets_versioned",
    "validate_class_bucket_encryption",
    "validate_class_buckets_replicated",
    "validate_class_key_multi_region",
    "validate_end_to_end_flag",
    "validate_explicit_regional_provider",
    "validate_key_separation_of_duties",
    "validate_no_key_material",
    "validate_ownership",
    "validate_public_access_block",
    "validate_regions_within_config",
    "validate_versioning",
]

POLICY_PACK_NAME = "clefs-invariants"

_REGIONS_SCHEMA = PolicyConfigSchema(
    properties={
        "allowedRegions": {
            "type": "array",
            "items": {"type": "string"},
            "default": list(DEFAULT_ALLOWED_REGIONS),
        }
    }
)
_M = EnforcementLevel.MANDATORY


def _resource(name: str, description: str, validate: Callable[..., None], **kw: Any) -> Policy:
    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=_M, **kw
    )


def _stack(name: str, description: str, validate: Callable[..., None], **kw: Any) -> Policy:
    return StackValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=_M, **kw
    )


def all_policies() -> list[Policy]:
    """Every Clefs policy, resource rules first."""
    return [*resource_policies(), *stack_policies()]


def resource_policies() -> list[Policy]:
    return [
        _resource(
            "clefs-kms-no-key-material",
            "No KMS key input carries key material (the HSM imports it).",
            validate_no_key_material,
        ),
        _resource(
            "clefs-kms-class-key-multi-region",
            "Class L1 keys are multi-region EXTERNAL keys.",
            validate_class_key_multi_region,
        ),
        _resource(
            "clefs-explicit-regional-provider",
            "AWS resources use an explicit provider in an allowed region.",
            validate_explicit_regional_provider,
            config_schema=_REGIONS_SCHEMA,
        ),
        _resource(
            "clefs-s3-public-access-block",
            "Public access blocks set all four flags.",
            validate_public_access_block,
        ),
        _resource("clefs-s3-versioning", "Bucket versioning is Enabled.", validate_versioning),
        _resource(
            "clefs-s3-ownership-enforced",
            "Object ownership is BucketOwnerEnforced (no ACLs).",
            validate_ownership,
        ),
        _resource(
            "clefs-s3-bucket-policy-tls-only",
            "Bucket policies deny plain HTTP and TLS < 1.2.",
            validate_bucket_policy_tls,
        ),
    ]


def stack_policies() -> list[Policy]:
    return [
        _stack(
            "clefs-class-buckets-encrypted-with-class-key",
            "Every bucket is encrypted; class buckets under their class key in their region.",
            validate_class_bucket_encryption,
        ),
        _stack(
            "clefs-buckets-tls-only",
            "Every bucket has a policy denying plain HTTP and TLS < 1.2.",
            validate_buckets_tls_only,
        ),
        _stack(
            "clefs-buckets-public-access-blocked",
            "Every bucket has all four public access blocks.",
            validate_buckets_public_access_blocked,
        ),
        _stack("clefs-buckets-versioned", "Every bucket is versioned.", validate_buckets_versioned),
        _stack(
            "clefs-class-buckets-replicated",
            "Every class bucket replicates to its replica bucket under the replica class key.",
            validate_class_buckets_replicated,
        ),
        _stack(
            "clefs-end-to-end-client-side-flag",
            "End-to-end classes carry client_side_encryption=true in their outputs.",
            validate_end_to_end_flag,
        ),
        _stack(
            "clefs-regions-within-config",
            "Nothing is deployed outside the configured (and allowed) regions.",
            validate_regions_within_config,
            config_schema=_REGIONS_SCHEMA,
        ),
        _stack(
            "clefs-kms-separation-of-duties",
            "Key policies separate administration, use and key-material import.",
            validate_key_separation_of_duties,
        ),
    ]


def policy_names(policies: Iterable[Policy]) -> list[str]:
    return [p.name for p in policies]

"""Resource rules: each sees one resource's inputs and provider (they run at preview too)."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from policy.bucket_policy import tls_problems
from policy.props import (
    BUCKET_POLICY,
    EXTERNAL_KEY,
    KMS_KEY_TYPES,
    OWNERSHIP,
    PROVIDER,
    PUBLIC_ACCESS,
    PUBLIC_ACCESS_FLAGS,
    VERSIONING,
    allowed_regions_of,
    json_doc,
    prop,
    provider_region,
    truthy,
    uses_default_provider,
)


def validate_no_key_material(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in KMS_KEY_TYPES:
        return
    material = prop(args.props, "keyMaterialBase64")
    if material is not None and material != "":
        report(
            f"{args.name}: keyMaterialBase64 is set; L1 key material must only be imported by "
            "the HSM ceremony, never passed through Pulumi config or state",
            None,
        )


def validate_class_key_multi_region(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == EXTERNAL_KEY and not truthy(prop(args.props, "multiRegion")):
        report(f"{args.name}: class keys must be multi-region (multiRegion: true)", None)


def validate_explicit_regional_provider(args: ResourceValidationArgs, report: ReportViolation) -> None:
    allowed_regions = allowed_regions_of(args.get_config())
    if args.resource_type == PROVIDER:
        region = prop(args.props, "region")
        if region not in allowed_regions:
            report(
                f"{args.name}: aws provider region {region!r} is outside the allowed regions "
                f"{list(allowed_regions)}",
                None,
            )
        return
    if not args.resource_type.startswith("aws:"):
        return
    if uses_default_provider(args.provider):
        report(
            f"{args.name}: uses the default aws provider; pass an explicit regional provider",
            None,
        )
    regions = {provider_region(args.provider), prop(args.props, "region")} - {None}
    for region in sorted(str(r) for r in regions):
        if region not in allowed_regions:
            report(
                f"{args.name}: region {region!r} is outside the allowed regions {list(allowed_regions)}",
                None,
            )


def validate_public_access_block(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != PUBLIC_ACCESS:
        return
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if not truthy(prop(args.props, flag))]
    if off:
        report(f"{args.name}: public access block must set {', '.join(off)} to true", None)


def validate_versioning(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VERSIONING:
        return
    status = prop(args.props, "versioningConfiguration", "status")
    if status != "Enabled":
        report(f"{args.name}: versioning status is {status!r}, must be 'Enabled'", None)


def validate_ownership(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != OWNERSHIP:
        return
    ownership = prop(args.props, "rule", "objectOwnership")
    if ownership != "BucketOwnerEnforced":
        report(f"{args.name}: object ownership is {ownership!r}, must be BucketOwnerEnforced", None)


def validate_bucket_policy_tls(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != BUCKET_POLICY:
        return
    name = str(prop(args.props, "bucket") or "")
    for problem in tls_problems(json_doc(prop(args.props, "policy")), name):
        report(f"{args.name}: bucket policy {problem}", None)

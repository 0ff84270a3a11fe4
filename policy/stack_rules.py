"""Stack rules: they see every resource's outputs after `pulumi up` and check relationships
(bucket <-> class key <-> region, class outputs, key policies against the roles)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import PolicyResource, ReportViolation, StackValidationArgs

from infra.model.data_classes import (
    COPY_PRIMARY,
    COPY_REPLICA,
    PURPOSE_CLASS_DATA,
    PURPOSE_TRANSCRIPTS,
    TAG_COPY,
    TAG_DATA_CLASS,
    TAG_PURPOSE,
)
from policy.bucket_policy import sse_kms_put_problems, tls_problems
from policy.key_policy import key_policy_findings
from policy.props import (
    BUCKET,
    BUCKET_POLICY,
    C_DATA_CLASS,
    C_PROVIDERS,
    C_ROLES,
    EXTERNAL_KEY,
    OWNERSHIP,
    PROVIDER,
    PUBLIC_ACCESS,
    PUBLIC_ACCESS_FLAGS,
    REPLICA_EXTERNAL_KEY,
    REPLICATION,
    SSE,
    STACK,
    VERSIONING,
    allowed_regions_of,
    bucket_arn,
    bucket_name,
    json_doc,
    prop,
    region_of,
    tags_of,
    truthy,
    uses_default_provider,
)

KEY_POLICY_ROLES = ("admin", "app", "ceremony", "auditor", "deployer")


@dataclass
class StackModel:
    """Index of a stack's resources by bucket name, class and region."""

    resources: list[PolicyResource]
    buckets: list[PolicyResource] = field(default_factory=list)
    per_bucket: dict[str, dict[tuple[str, str | None], list[PolicyResource]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    keys: dict[tuple[str, str | None], list[PolicyResource]] = field(
        default_factory=lambda: defaultdict(list)
    )
    components: dict[str, list[PolicyResource]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        for r in self.resources:
            if r.resource_type == BUCKET:
                self.buckets.append(r)
            elif r.resource_type in (SSE, VERSIONING, PUBLIC_ACCESS, OWNERSHIP, BUCKET_POLICY, REPLICATION):
                name = str(prop(r.props, "bucket") or "")
                self.per_bucket[r.resource_type][(name, region_of(r))].append(r)
            elif r.resource_type in (EXTERNAL_KEY, REPLICA_EXTERNAL_KEY):
                data_class = tags_of(r.props).get(TAG_DATA_CLASS)
                if data_class:
                    self.keys[(str(data_class), region_of(r))].append(r)
            elif r.resource_type.startswith("clefs:") or r.resource_type == STACK:
                self.components[r.resource_type].append(r)

    def attached(self, kind: str, bucket: PolicyResource) -> list[PolicyResource]:
        return self.per_bucket[kind].get((bucket_name(bucket), region_of(bucket)), [])

    def class_key_arn(self, data_class: str, region: str | None) -> str | None:
        found = self.keys.get((data_class, region), [])
        if len(found) != 1:
            return None
        arn = prop(found[0].props, "arn")
        return str(arn) if arn else None

    def data_class_outputs(self) -> dict[str, Mapping[str, Any]]:
        return {str(c.name): c.props for c in self.components.get(C_DATA_CLASS, [])}


def _label(bucket: PolicyResource) -> str:
    return f"bucket {bucket_name(bucket)} ({region_of(bucket)})"


def _class_buckets(model: StackModel) -> dict[str, dict[str, PolicyResource]]:
    """data class -> copy (primary/replica) -> bucket."""
    out: dict[str, dict[str, PolicyResource]] = defaultdict(dict)
    for b in model.buckets:
        tags = tags_of(b.props)
        if tags.get(TAG_PURPOSE) == PURPOSE_CLASS_DATA and tags.get(TAG_DATA_CLASS):
            out[str(tags[TAG_DATA_CLASS])][str(tags.get(TAG_COPY))] = b
    return out


# -- stack rules -----------------------------------------------------------------------------
def validate_class_bucket_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    if not model.buckets:
        report("the stack declares no buckets: class storage is missing", None)
    for b in model.buckets:
        tags = tags_of(b.props)
        purpose, data_class = tags.get(TAG_PURPOSE), tags.get(TAG_DATA_CLASS)
        sse = model.attached(SSE, b)
        if purpose == PURPOSE_TRANSCRIPTS:
            if not sse or not prop(
                sse[0].props, "rules", 0, "applyServerSideEncryptionByDefault", "sseAlgorithm"
            ):
                report(f"{_label(b)}: transcript bucket has no default encryption", b.urn)
            continue
        if purpose != PURPOSE_CLASS_DATA or not data_class:
            report(
                f"{_label(b)}: belongs to no data class (tags {TAG_PURPOSE}={PURPOSE_CLASS_DATA} "
                f"and {TAG_DATA_CLASS}) and is not the transcript bucket",
                b.urn,
            )
            continue
        key_arn = model.class_key_arn(str(data_class), region_of(b))
        if key_arn is None:
            report(f"{_label(b)}: no single {data_class} class key in its region", b.urn)
            continue
        if len(sse) != 1:
            report(f"{_label(b)}: expected one default-encryption configuration, found {len(sse)}", b.urn)
            continue
        default = prop(sse[0].props, "rules", 0, "applyServerSideEncryptionByDefault") or {}
        if prop(default, "sseAlgorithm") != "aws:kms" or prop(default, "kmsMasterKeyId") != key_arn:
            report(
                f"{_label(b)}: default encryption must be aws:kms under its class key {key_arn}, "
                f"found {prop(default, 'sseAlgorithm')!r} / {prop(default, 'kmsMasterKeyId')!r}",
                b.urn,
            )
        if not truthy(prop(sse[0].props, "rules", 0, "bucketKeyEnabled")):
            report(f"{_label(b)}: S3 bucket keys must be enabled", b.urn)
        policies = model.attached(BUCKET_POLICY, b)
        doc = json_doc(prop(policies[0].props, "policy")) if len(policies) == 1 else None
        for problem in sse_kms_put_problems(doc, bucket_name(b), key_arn):
            report(f"{_label(b)}: bucket policy {problem}", b.urn)


def validate_buckets_tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        policies = model.attached(BUCKET_POLICY, b)
        if len(policies) != 1:
            report(f"{_label(b)}: expected one bucket policy, found {len(policies)}", b.urn)
            continue
        for problem in tls_problems(json_doc(prop(policies[0].props, "policy")), bucket_name(b)):
            report(f"{_label(b)}: bucket policy {problem}", b.urn)


def validate_buckets_public_access_blocked(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        blocks = model.attached(PUBLIC_ACCESS, b)
        if not blocks:
            report(f"{_label(b)}: has no public access block", b.urn)
            continue
        off = [f for f in PUBLIC_ACCESS_FLAGS if not all(truthy(prop(x.props, f)) for x in blocks)]
        if off:
            report(f"{_label(b)}: public access block leaves {', '.join(off)} off", b.urn)


def validate_buckets_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        versioning = model.attached(VERSIONING, b)
        statuses = [prop(v.props, "versioningConfiguration", "status") for v in versioning]
        if statuses != ["Enabled"]:
            report(f"{_label(b)}: versioning must be Enabled, found {statuses or 'none'}", b.urn)


def validate_class_buckets_replicated(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for data_class, copies in sorted(_class_buckets(model).items()):
        source, replica = copies.get(COPY_PRIMARY), copies.get(COPY_REPLICA)
        if source is None or replica is None:
            report(f"data class {data_class}: needs a primary and a replica bucket", None)
            continue
        if region_of(source) == region_of(replica):
            report(
                f"data class {data_class}: primary and replica buckets share region {region_of(source)}",
                source.urn,
            )
        configs = model.attached(REPLICATION, source)
        if len(configs) != 1:
            report(
                f"{_label(source)}: expected one replication configuration, found {len(configs)}", source.urn
            )
            continue
        props = configs[0].props
        replica_key = model.class_key_arn(data_class, region_of(replica))
        rules = [r for r in (prop(props, "rules") or []) if prop(r, "status") == "Enabled"]
        if not prop(props, "role"):
            report(f"{_label(source)}: replication has no IAM role", source.urn)
        good = [
            r
            for r in rules
            if prop(r, "destination", "bucket") == bucket_arn(bucket_name(replica))
            and replica_key is not None
            and prop(r, "destination", "encryptionConfiguration", "replicaKmsKeyId") == replica_key
            and prop(r, "sourceSelectionCriteria", "sseKmsEncryptedObjects", "status") == "Enabled"
            and not prop(r, "filter", "prefix")
            and not prop(r, "filter", "tag")
            and not prop(r, "filter", "and")
        ]
        if not good:
            report(
                f"{_label(source)}: no enabled whole-bucket rule replicates SSE-KMS objects to "
                f"{bucket_name(replica)} under its {data_class} replica key {replica_key}",
                source.urn,
            )


def validate_end_to_end_flag(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    components = model.components.get(C_DATA_CLASS, [])
    if not components:
        report("no clefs:infra:DataClass component: cannot check the client-side encryption flags", None)
    sources: list[tuple[str, Mapping[str, Any], str | None]] = [
        (f"data class {c.name}", c.props, c.urn) for c in components
    ]
    for stack in model.components.get(STACK, []):
        for name, outputs in (prop(stack.props, "classes") or {}).items():
            sources.append((f"stack output classes.{name}", outputs, stack.urn))
    for label, outputs, urn in sources:
        end_to_end = prop(outputs, "end_to_end")
        flag = prop(outputs, "client_side_encryption")
        if not isinstance(end_to_end, bool) or not isinstance(flag, bool):
            report(f"{label}: outputs must carry boolean end_to_end and client_side_encryption", urn)
        elif end_to_end and not flag:
            report(f"{label}: end-to-end class without client_side_encryption=true in its outputs", urn)


def validate_regions_within_config(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    allowed_regions = set(allowed_regions_of(args.get_config()))
    declared_components = model.components.get(C_PROVIDERS, [])
    declared = {str(r) for c in declared_components for r in (prop(c.props, "regions") or [])}
    if not declared:
        report("no clefs:infra:RegionalProviders outputs: the configured regions are unknown", None)
    for outside in sorted(declared - allowed_regions):
        report(f"configured region {outside} is outside the allowed regions {sorted(allowed_regions)}", None)
    permitted = declared & allowed_regions
    for r in args.resources:
        if r.resource_type == PROVIDER:
            region = prop(r.props, "region")
            if region not in permitted:
                report(f"aws provider {r.name} targets {region!r}, outside {sorted(permitted)}", r.urn)
            continue
        if not r.resource_type.startswith("aws:"):
            continue
        if uses_default_provider(r.provider):
            report(f"{r.resource_type.rsplit(':', 1)[-1]} {r.name}: uses the default aws provider", r.urn)
        where = region_of(r)
        if where is not None and where not in permitted:
            report(
                f"{r.resource_type.rsplit(':', 1)[-1]} {r.name}: region {where} is outside "
                f"{sorted(permitted)}",
                r.urn,
            )


def validate_key_separation_of_duties(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    roles_components = model.components.get(C_ROLES, [])
    roles = roles_components[0].props if roles_components else {}
    if not all(isinstance(prop(roles, r), str) for r in KEY_POLICY_ROLES):
        report(
            f"no clefs:infra:Roles outputs ({', '.join(KEY_POLICY_ROLES)}): cannot check key policies", None
        )
        return
    classes = model.data_class_outputs()
    for (data_class, region), keys in sorted(model.keys.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        outputs = classes.get(data_class)
        bucket = prop(outputs, "regions", str(region), "bucket_arn")
        replication = prop(outputs, "replication_role")
        for key in keys:
            arn = str(prop(key.props, "arn") or "")
            if not bucket or not replication or arn.count(":") < 5:
                report(
                    f"key {key.name}: its data class outputs (bucket_arn, replication_role) are missing",
                    key.urn,
                )
                continue
            copy = COPY_PRIMARY if key.resource_type == EXTERNAL_KEY else COPY_REPLICA
            findings = key_policy_findings(
                json_doc(prop(key.props, "policy")),
                data_class=data_class,
                region=str(region),
                copy=copy,
                account_id=arn.split(":")[4],
                roles={r: str(roles[r]) for r in KEY_POLICY_ROLES},
                replication_role=str(replication),
                bucket_arn_in_region=str(bucket),
            )
            for finding in findings:
                report(f"key {key.name} ({region}): {finding}", key.urn)

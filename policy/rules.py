"""Clefs invariants as pulumi-policy rules (importable; the PolicyPack is built in __main__.py).

Resource rules see one resource's inputs (they run at preview too); stack rules see every
resource's outputs after `pulumi up` and check relationships (bucket <-> class key <-> region).
Every validator can be called directly with hand-built ResourceValidationArgs /
StackValidationArgs; policy/offline.py feeds them a graph recorded under Pulumi mocks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.model.data_classes import (
    COPY_PRIMARY,
    COPY_REPLICA,
    ENCRYPTION_CONTEXT_KEY,
    PURPOSE_CLASS_DATA,
    PURPOSE_TRANSCRIPTS,
    TAG_COPY,
    TAG_DATA_CLASS,
    TAG_PURPOSE,
)
from infra.model.settings import DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION
from policy.iam import Request, allowed, evaluate

POLICY_PACK_NAME = "clefs-invariants"
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
_PROBE_ACCOUNT = "000000000000"


# -- small helpers ---------------------------------------------------------------------------
def _get(value: Any, *path: str | int) -> Any:
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


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return value is True


def _tags(props: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = _get(props, "tags") or _get(props, "tagsAll")
    return tags if isinstance(tags, Mapping) else {}


def _json(value: Any) -> Mapping[str, Any] | None:
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


def _allowed_regions(config: Mapping[str, Any]) -> tuple[str, ...]:
    regions = config.get("allowedRegions")
    if isinstance(regions, Sequence) and not isinstance(regions, str) and regions:
        return tuple(str(r) for r in regions)
    return DEFAULT_ALLOWED_REGIONS


# -- bucket policy behaviour (probed with the evaluator, not matched textually) ----------------
_PROBE_PRINCIPAL = f"arn:aws:iam::{_PROBE_ACCOUNT}:role/clefs-policy-probe"
_TLS_OK = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.3"}


def _denied(doc: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    try:
        decision = evaluate(doc, Request(_PROBE_PRINCIPAL, action, context, resource=resource))
    except ValueError:
        return False
    return decision == "explicit-deny"


def tls_problems(doc: Mapping[str, Any] | None, name: str) -> list[str]:
    """What the bucket policy fails to deny: plain HTTP, or TLS below 1.2 (bucket and objects)."""
    if doc is None:
        return ["has no parseable bucket policy"]
    arn = bucket_arn(name)
    probes = (("s3:ListBucket", arn), ("s3:GetObject", f"{arn}/probe"), ("s3:PutObject", f"{arn}/probe"))
    problems: list[str] = []
    for action, resource in probes:
        if not _denied(doc, action, resource, {"aws:SecureTransport": "false", "s3:TlsVersion": "1.2"}):
            problems.append(f"does not deny {action} without TLS (aws:SecureTransport=false)")
        if not _denied(doc, action, resource, {"aws:SecureTransport": "true", "s3:TlsVersion": "1.1"}):
            problems.append(f"does not deny {action} over TLS 1.1 (s3:TlsVersion < 1.2)")
    return sorted(set(problems))


def sse_kms_put_problems(doc: Mapping[str, Any] | None, name: str, key_arn: str) -> list[str]:
    """What the bucket policy fails to deny: PutObject not asking SSE-KMS under `key_arn`."""
    if doc is None:
        return ["has no parseable bucket policy"]
    obj = f"{bucket_arn(name)}/probe"
    sse, kid = "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id"
    other_key = key_arn.rsplit("/", 1)[0] + "/mrk-00000000000000000000000000000000"
    bad = {
        "without SSE headers": {},
        "with SSE-S3 (AES256)": {sse: "AES256"},
        "with SSE-KMS and no key id": {sse: "aws:kms"},
        "with SSE-KMS under another key": {sse: "aws:kms", kid: other_key},
    }
    problems = [
        f"does not deny PutObject {label}"
        for label, ctx in bad.items()
        if not _denied(doc, "s3:PutObject", obj, {**_TLS_OK, **ctx})
    ]
    if _denied(doc, "s3:PutObject", obj, {**_TLS_OK, sse: "aws:kms", kid: key_arn}):
        problems.append("denies PutObject even with SSE-KMS under the class key")
    return problems


# -- KMS key policy: separation of duties -------------------------------------------------------
_USE_PROBES = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)
_APP_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")
_IMPORT_ACTIONS = ("kms:GetParametersForImport", "kms:ImportKeyMaterial", "kms:DeleteImportedKeyMaterial")
_ADMIN_PROBES = ("kms:DescribeKey", "kms:DisableKey")
# Changing the policy (and so who may use the key) or deleting the key: the named deployer only,
# never delegated to IAM (an AdministratorAccess principal must not grant itself Decrypt).
_POLICY_CHANGE_PROBES = ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion")
_AUDITOR_PROBES = ("kms:DescribeKey", "kms:GetKeyPolicy", "kms:ListResourceTags")


def key_policy_findings(
    doc: Mapping[str, Any] | None,
    *,
    data_class: str,
    region: str,
    copy: str,
    account_id: str,
    roles: Mapping[str, str],
    replication_role: str,
    bucket_arn_in_region: str,
) -> list[str]:
    """Separation-of-duties breaches of one class key policy (empty list: compliant)."""
    if doc is None:
        return ["has no parseable key policy"]
    admin, app, ceremony = roles["admin"], roles["app"], roles["ceremony"]
    auditor, deployer = roles["auditor"], roles["deployer"]
    outsider = f"arn:aws:iam::{account_id}:role/clefs-policy-probe-outsider"
    root = f"arn:aws:iam::{account_id}:root"
    own = {f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": data_class}
    other = {f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": f"{data_class}-other"}
    via_s3 = {
        "kms:ViaService": f"s3.{region}.amazonaws.com",
        "kms:EncryptionContext:aws:s3:arn": f"{bucket_arn_in_region}/probe",
    }
    via_s3_elsewhere = {**via_s3, "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::elsewhere/probe"}
    grant_for_self = {"kms:GrantIsForAWSResource": "false"}
    findings: list[str] = []
    for statement in doc.get("Statement") or []:
        principal = statement.get("Principal") if isinstance(statement, Mapping) else None
        wildcard = principal == "*" or (
            isinstance(principal, Mapping)
            and "*"
            in (principal.get("AWS") if isinstance(principal.get("AWS"), list) else [principal.get("AWS")])
        )
        if isinstance(statement, Mapping) and statement.get("Effect") == "Allow" and wildcard:
            findings.append(f"statement {statement.get('Sid') or '(no Sid)'} allows a wildcard principal")

    def expect(label: str, who: str, action: str, ctx: Mapping[str, str], want: bool, *, iam: bool) -> None:
        try:
            got = allowed(doc, Request(who, action, ctx, iam_allows=iam))
        except ValueError as exc:
            findings.append(f"cannot be evaluated: {exc}")
            return
        if got != want:
            parts = [label, "cannot" if want else "can", action, _ctx_label(ctx)]
            if iam:
                parts.append("even with an IAM policy granting kms:*")
            findings.append(" ".join(p for p in parts if p))

    for iam in (False, True):
        for action in _USE_PROBES:
            for ctx in (own, via_s3):
                expect("key administrators", admin, action, ctx, False, iam=iam)
                expect("the ceremony role", ceremony, action, ctx, False, iam=iam)
                expect("other account principals", outsider, action, ctx, False, iam=iam)
            if action not in _APP_ACTIONS:
                expect("the app role", app, action, own, False, iam=iam)
        for action in _APP_ACTIONS:
            expect("the app role", app, action, other, False, iam=iam)
            expect("the app role", app, action, {}, False, iam=iam)
            expect("the app role", app, action, via_s3_elsewhere, False, iam=iam)
        for action in _IMPORT_ACTIONS:
            for who, label in (
                (admin, "key administrators"),
                (app, "the app role"),
                (outsider, "other account principals"),
                (replication_role, "the replication role"),
            ):
                expect(label, who, action, {}, False, iam=iam)
        for action in (*_ADMIN_PROBES, *_POLICY_CHANGE_PROBES):
            for who, label in (
                (app, "the app role"),
                (ceremony, "the ceremony role"),
                (replication_role, "the replication role"),
            ):
                expect(label, who, action, {}, False, iam=iam)
        for action in _POLICY_CHANGE_PROBES:
            for who, label in (
                (admin, "key administrators"),
                (auditor, "the auditor"),
                (root, "the account's IAM principals"),
                (outsider, "other account principals"),
            ):
                if who != deployer:  # on LocalStack the account root runs the program: it is the deployer
                    expect(label, who, action, {}, False, iam=iam)
        for action in (*_USE_PROBES, *_IMPORT_ACTIONS, "kms:DisableKey"):
            expect("the auditor", auditor, action, own, False, iam=iam)
        for action in (*_USE_PROBES, *_IMPORT_ACTIONS):
            expect("the deployer", deployer, action, own, False, iam=iam)
        for who, label in (
            (admin, "key administrators"),
            (app, "the app role"),
            (outsider, "other account principals"),
        ):
            expect(label, who, "kms:CreateGrant", grant_for_self, False, iam=iam)
    # nobody else administers the key on the policy's word alone (PutKeyPolicy is not open), and
    # another account gets nothing even if its own IAM policies grant kms:*
    foreign = "arn:aws:iam::999999999999:role/clefs-policy-probe-foreign"
    for action in (*_ADMIN_PROBES, "kms:CreateGrant"):
        expect("other account principals", outsider, action, {}, False, iam=False)
    for action in (*_ADMIN_PROBES, *_USE_PROBES, *_IMPORT_ACTIONS):
        for ctx in ({}, own, via_s3):
            expect("another account", foreign, action, ctx, False, iam=True)
    for action in _APP_ACTIONS:
        expect("the app role", app, action, own, True, iam=False)
        expect("the app role", app, action, via_s3, True, iam=False)
    for action in _IMPORT_ACTIONS:
        expect("the ceremony role", ceremony, action, {}, True, iam=False)
    for action in _ADMIN_PROBES:
        expect("key administrators", admin, action, {}, True, iam=False)
    for action in _AUDITOR_PROBES:
        expect("the auditor", auditor, action, {}, True, iam=False)
    for action in _POLICY_CHANGE_PROBES:  # lock-out safety: the deployer can still change it
        expect("the deployer (lock-out safety)", deployer, action, {}, True, iam=False)
    wanted = ("kms:Decrypt",) if copy == COPY_PRIMARY else ("kms:Encrypt", "kms:GenerateDataKey")
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"):
        expect("the replication role", replication_role, action, via_s3, action in wanted, iam=False)
        expect("the replication role", replication_role, action, own, False, iam=True)
    return list(dict.fromkeys(findings))


def _ctx_label(ctx: Mapping[str, str]) -> str:
    if not ctx:
        return ""
    return "(" + ", ".join(f"{k.split(':', 1)[-1]}={v}" for k, v in ctx.items()) + ")"


# -- resource rules ------------------------------------------------------------------------------
def validate_no_key_material(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in KMS_KEY_TYPES:
        return
    material = _get(args.props, "keyMaterialBase64")
    if material is not None and material != "":
        report(
            f"{args.name}: keyMaterialBase64 is set; L1 key material must only be imported by "
            "the HSM ceremony, never passed through Pulumi config or state",
            None,
        )


def validate_class_key_multi_region(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == EXTERNAL_KEY and not _truthy(_get(args.props, "multiRegion")):
        report(f"{args.name}: class keys must be multi-region (multiRegion: true)", None)


def _provider_region(provider: Any) -> str | None:
    if provider is None:
        return None
    region = _get(provider.props, "region")
    return str(region) if isinstance(region, str) else None


def _uses_default_provider(provider: Any) -> bool:
    return provider is None or str(provider.name).startswith("default")


def validate_explicit_regional_provider(args: ResourceValidationArgs, report: ReportViolation) -> None:
    allowed_regions = _allowed_regions(args.get_config())
    if args.resource_type == PROVIDER:
        region = _get(args.props, "region")
        if region not in allowed_regions:
            report(
                f"{args.name}: aws provider region {region!r} is outside the allowed regions "
                f"{list(allowed_regions)}",
                None,
            )
        return
    if not args.resource_type.startswith("aws:"):
        return
    if _uses_default_provider(args.provider):
        report(
            f"{args.name}: uses the default aws provider; pass an explicit regional provider",
            None,
        )
    regions = {_provider_region(args.provider), _get(args.props, "region")} - {None}
    for region in sorted(str(r) for r in regions):
        if region not in allowed_regions:
            report(
                f"{args.name}: region {region!r} is outside the allowed regions {list(allowed_regions)}",
                None,
            )


def validate_public_access_block(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != PUBLIC_ACCESS:
        return
    off = [flag for flag in PUBLIC_ACCESS_FLAGS if not _truthy(_get(args.props, flag))]
    if off:
        report(f"{args.name}: public access block must set {', '.join(off)} to true", None)


def validate_versioning(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VERSIONING:
        return
    status = _get(args.props, "versioningConfiguration", "status")
    if status != "Enabled":
        report(f"{args.name}: versioning status is {status!r}, must be 'Enabled'", None)


def validate_ownership(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != OWNERSHIP:
        return
    ownership = _get(args.props, "rule", "objectOwnership")
    if ownership != "BucketOwnerEnforced":
        report(f"{args.name}: object ownership is {ownership!r}, must be BucketOwnerEnforced", None)


def validate_bucket_policy_tls(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != BUCKET_POLICY:
        return
    name = str(_get(args.props, "bucket") or "")
    for problem in tls_problems(_json(_get(args.props, "policy")), name):
        report(f"{args.name}: bucket policy {problem}", None)


# -- the stack model -------------------------------------------------------------------------
def region_of(resource: PolicyResource) -> str | None:
    region = _get(resource.props, "region")
    if isinstance(region, str) and region:
        return region
    return _provider_region(resource.provider)


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
                name = str(_get(r.props, "bucket") or "")
                self.per_bucket[r.resource_type][(name, region_of(r))].append(r)
            elif r.resource_type in (EXTERNAL_KEY, REPLICA_EXTERNAL_KEY):
                data_class = _tags(r.props).get(TAG_DATA_CLASS)
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
        arn = _get(found[0].props, "arn")
        return str(arn) if arn else None

    def data_class_outputs(self) -> dict[str, Mapping[str, Any]]:
        return {str(c.name): c.props for c in self.components.get(C_DATA_CLASS, [])}


def bucket_name(bucket: PolicyResource) -> str:
    return str(_get(bucket.props, "bucket") or bucket.name)


def _label(bucket: PolicyResource) -> str:
    return f"bucket {bucket_name(bucket)} ({region_of(bucket)})"


def _class_buckets(model: StackModel) -> dict[str, dict[str, PolicyResource]]:
    """data class -> copy (primary/replica) -> bucket."""
    out: dict[str, dict[str, PolicyResource]] = defaultdict(dict)
    for b in model.buckets:
        tags = _tags(b.props)
        if tags.get(TAG_PURPOSE) == PURPOSE_CLASS_DATA and tags.get(TAG_DATA_CLASS):
            out[str(tags[TAG_DATA_CLASS])][str(tags.get(TAG_COPY))] = b
    return out


# -- stack rules -----------------------------------------------------------------------------
def validate_class_bucket_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    if not model.buckets:
        report("the stack declares no buckets: class storage is missing", None)
    for b in model.buckets:
        tags = _tags(b.props)
        purpose, data_class = tags.get(TAG_PURPOSE), tags.get(TAG_DATA_CLASS)
        sse = model.attached(SSE, b)
        if purpose == PURPOSE_TRANSCRIPTS:
            if not sse or not _get(
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
        default = _get(sse[0].props, "rules", 0, "applyServerSideEncryptionByDefault") or {}
        if _get(default, "sseAlgorithm") != "aws:kms" or _get(default, "kmsMasterKeyId") != key_arn:
            report(
                f"{_label(b)}: default encryption must be aws:kms under its class key {key_arn}, "
                f"found {_get(default, 'sseAlgorithm')!r} / {_get(default, 'kmsMasterKeyId')!r}",
                b.urn,
            )
        if not _truthy(_get(sse[0].props, "rules", 0, "bucketKeyEnabled")):
            report(f"{_label(b)}: S3 bucket keys must be enabled", b.urn)
        policies = model.attached(BUCKET_POLICY, b)
        doc = _json(_get(policies[0].props, "policy")) if len(policies) == 1 else None
        for problem in sse_kms_put_problems(doc, bucket_name(b), key_arn):
            report(f"{_label(b)}: bucket policy {problem}", b.urn)


def validate_buckets_tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        policies = model.attached(BUCKET_POLICY, b)
        if len(policies) != 1:
            report(f"{_label(b)}: expected one bucket policy, found {len(policies)}", b.urn)
            continue
        for problem in tls_problems(_json(_get(policies[0].props, "policy")), bucket_name(b)):
            report(f"{_label(b)}: bucket policy {problem}", b.urn)


def validate_buckets_public_access_blocked(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        blocks = model.attached(PUBLIC_ACCESS, b)
        if not blocks:
            report(f"{_label(b)}: has no public access block", b.urn)
            continue
        off = [f for f in PUBLIC_ACCESS_FLAGS if not all(_truthy(_get(x.props, f)) for x in blocks)]
        if off:
            report(f"{_label(b)}: public access block leaves {', '.join(off)} off", b.urn)


def validate_buckets_versioned(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    for b in model.buckets:
        versioning = model.attached(VERSIONING, b)
        statuses = [_get(v.props, "versioningConfiguration", "status") for v in versioning]
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
        rules = [r for r in (_get(props, "rules") or []) if _get(r, "status") == "Enabled"]
        if not _get(props, "role"):
            report(f"{_label(source)}: replication has no IAM role", source.urn)
        good = [
            r
            for r in rules
            if _get(r, "destination", "bucket") == bucket_arn(bucket_name(replica))
            and replica_key is not None
            and _get(r, "destination", "encryptionConfiguration", "replicaKmsKeyId") == replica_key
            and _get(r, "sourceSelectionCriteria", "sseKmsEncryptedObjects", "status") == "Enabled"
            and not _get(r, "filter", "prefix")
            and not _get(r, "filter", "tag")
            and not _get(r, "filter", "and")
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
        for name, outputs in (_get(stack.props, "classes") or {}).items():
            sources.append((f"stack output classes.{name}", outputs, stack.urn))
    for label, outputs, urn in sources:
        end_to_end = _get(outputs, "end_to_end")
        flag = _get(outputs, "client_side_encryption")
        if not isinstance(end_to_end, bool) or not isinstance(flag, bool):
            report(f"{label}: outputs must carry boolean end_to_end and client_side_encryption", urn)
        elif end_to_end and not flag:
            report(f"{label}: end-to-end class without client_side_encryption=true in its outputs", urn)


def validate_regions_within_config(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    allowed_regions = set(_allowed_regions(args.get_config()))
    declared_components = model.components.get(C_PROVIDERS, [])
    declared = {str(r) for c in declared_components for r in (_get(c.props, "regions") or [])}
    if not declared:
        report("no clefs:infra:RegionalProviders outputs: the configured regions are unknown", None)
    for region in sorted(declared - allowed_regions):
        report(f"configured region {region} is outside the allowed regions {sorted(allowed_regions)}", None)
    permitted = declared & allowed_regions
    for r in args.resources:
        if r.resource_type == PROVIDER:
            region = _get(r.props, "region")
            if region not in permitted:
                report(f"aws provider {r.name} targets {region!r}, outside {sorted(permitted)}", r.urn)
            continue
        if not r.resource_type.startswith("aws:"):
            continue
        if _uses_default_provider(r.provider):
            report(f"{r.resource_type.rsplit(':', 1)[-1]} {r.name}: uses the default aws provider", r.urn)
        region = region_of(r)
        if region is not None and region not in permitted:
            report(
                f"{r.resource_type.rsplit(':', 1)[-1]} {r.name}: region {region} is outside "
                f"{sorted(permitted)}",
                r.urn,
            )


KEY_POLICY_ROLES = ("admin", "app", "ceremony", "auditor", "deployer")


def validate_key_separation_of_duties(args: StackValidationArgs, report: ReportViolation) -> None:
    model = StackModel(args.resources)
    roles_components = model.components.get(C_ROLES, [])
    roles = roles_components[0].props if roles_components else {}
    if not all(isinstance(_get(roles, r), str) for r in KEY_POLICY_ROLES):
        report(
            f"no clefs:infra:Roles outputs ({', '.join(KEY_POLICY_ROLES)}): cannot check key policies", None
        )
        return
    classes = model.data_class_outputs()
    for (data_class, region), keys in sorted(model.keys.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        outputs = classes.get(data_class)
        bucket = _get(outputs, "regions", str(region), "bucket_arn")
        replication = _get(outputs, "replication_role")
        for key in keys:
            arn = str(_get(key.props, "arn") or "")
            if not bucket or not replication or arn.count(":") < 5:
                report(
                    f"key {key.name}: its data class outputs (bucket_arn, replication_role) are missing",
                    key.urn,
                )
                continue
            copy = COPY_PRIMARY if key.resource_type == EXTERNAL_KEY else COPY_REPLICA
            findings = key_policy_findings(
                _json(_get(key.props, "policy")),
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


# -- the policies ------------------------------------------------------------------------------
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

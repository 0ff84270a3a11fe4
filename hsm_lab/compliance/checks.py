"""`verify`: what is protected how, proved from live state (LocalStack or AWS).

For each data class and region of the deployed stack (its outputs say which keys, buckets and
roles exist) it reads S3 and KMS, never the Pulumi program, and *evaluates* every claim:

- at rest: default encryption is SSE-KMS under the class key with bucket keys, and every stored
  object version really is SSE-KMS under that key (each one is read);
- uploads: the bucket policy, run through the project's IAM evaluator (policy/iam.py), denies
  PutObject without SSE, with SSE-S3, with SSE-KMS and no key or another key, and lets the app
  role's PutObject under the class key through;
- in transit: the same evaluator denies plain HTTP and TLS 1.0/1.1 for GetObject and PutObject,
  for the app role, another role and another account, and lets TLS 1.2 through;
- key (L1): Enabled, EXTERNAL (BYOK), material imported, its expiry;
- key policy: read in the key's region and checked with the policy pack's own rules
  (policy.rules.key_policy_findings: separation of duties, no wildcard principal, no
  unconditioned Decrypt, PutKeyPolicy not open);
- end to end: every object version (paginated, up to --max-objects) starts with a well-formed
  clefs envelope naming this class, its own record id, one of the class keys, and the
  end-to-end layer the class requires (headers are checked, not decrypted);
- replication: the primary's rule (enabled, whole bucket, replica key, SSE-KMS objects), and
  what is really in the replica bucket: every version of the primary, byte-identical header,
  stored under the replica key;
- public access blocked (all four switches) and versioning on.

Each cell says where its truth comes from (docs/verify.md): ``observed`` (read from live state
and checked), ``configured`` (read and evaluated, but the emulator does not enforce it:
LocalStack enforces no bucket or key policy and no public access block, docs/localstack.md),
or ``not checked``. Every failed check is a gap; `verify` exits non-zero and names each one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors
from hsm_lab.aws.deployment import Outputs, stack_outputs
from hsm_lab.datapath import envelope
from infra.model.outputs import ClassOutputs, RegionOutputs, RoleOutputs, StackOutputs

ClientFor = Callable[[str, str], Any]
SCHEMA = "clefs.verify/v2"
OBSERVED, CONFIGURED, NOT_CHECKED = "observed", "configured", "not checked"
CHECKS = (
    "at_rest",
    "uploads",
    "key",
    "key_policy",
    "in_transit",
    "end_to_end",
    "replication",
    "public_access",
    "versioning",
)
DEFAULT_MAX_OBJECTS = 10_000
HEADER_BYTES = envelope.PREFIX.size + envelope.MAX_HEADER
WORKERS = 8
NOT_ENFORCED_BY_LOCALSTACK = (
    "bucket policies (TLS-only transport, SSE-KMS-only uploads)",
    "key policies (separation of duties)",
    "public access blocks",
    "S3 replication (the rule is stored, nothing is copied)",
)
FOREIGN_ACCOUNT = "999999999999"


@dataclass
class Cell:
    """One check for one class in one region."""

    ok: bool
    detail: str
    short: str = ""  # what the table shows; `detail` goes to gaps and --json
    source: str = OBSERVED

    def __post_init__(self) -> None:
        if not self.short:
            self.short = "GAP" if not self.ok else self.detail


@dataclass
class Row:
    data_class: str
    region: str
    role: str
    bucket: str
    key_arn: str
    end_to_end_required: bool
    objects_scanned: int = 0
    truncated: bool = False
    cells: dict[str, Cell] = field(default_factory=dict)

    def gaps(self) -> list[str]:
        return [
            f"{self.data_class} {self.region} {name}: {cell.detail}"
            for name, cell in self.cells.items()
            if not cell.ok
        ]


@dataclass
class Report:
    rows: list[Row]
    target: str = "aws"  # "localstack" or "aws"
    max_objects: int = DEFAULT_MAX_OBJECTS

    @property
    def gaps(self) -> list[str]:
        return [gap for row in self.rows for gap in row.gaps()]

    @property
    def objects_scanned(self) -> int:
        return sum(row.objects_scanned for row in self.rows)

    @property
    def not_enforced(self) -> list[str]:
        return list(NOT_ENFORCED_BY_LOCALSTACK) if self.target == "localstack" else []

    def not_checked(self) -> list[str]:
        return [
            f"{row.data_class} {row.region} {name}: {cell.detail}"
            for row in self.rows
            for name, cell in row.cells.items()
            if cell.source == NOT_CHECKED
        ]

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "ok": not self.gaps,
                "target": self.target,
                "max_objects": self.max_objects,
                "objects_scanned": self.objects_scanned,
                "not_enforced": self.not_enforced,
                "gaps": self.gaps,
                "rows": [asdict(row) for row in self.rows],
            },
            indent=2,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


def _call(action: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return action(), None
    except ClientError as exc:
        return None, _code(exc)
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot read live state: {' '.join(str(exc).split())[:200]}") from None


def _same_key(reference: str | None, key_arn: str) -> bool:
    if not reference:
        return False
    return reference == key_arn or key_arn.endswith("/" + reference.split("/")[-1])


def _examples(items: list[str], n: int = 2) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# --------------------------------------------------------------------------- the object scan


@dataclass
class Stored:
    """One object version as S3 returns it (first bytes only)."""

    key: str
    version_id: str
    sse: str | None
    kms_key: str | None
    header: envelope.Header | None
    aad: bytes | None
    error: str | None = None


@dataclass
class Scan:
    objects: list[Stored]
    truncated: bool
    error: str | None = None


def list_versions(s3: Any, bucket: str, limit: int) -> tuple[list[dict[str, Any]], bool, str | None]:
    """Every object version of the bucket (delete markers aside), at most `limit` (+ truncated)."""
    found: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            found += page.get("Versions", [])
            if len(found) > limit:
                return found[:limit], True, None
    except ClientError as exc:
        return [], False, _code(exc)
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot read live state: {' '.join(str(exc).split())[:200]}") from None
    return found, False, None


def read_stored(s3: Any, bucket: str, version: Mapping[str, Any]) -> Stored:
    key, version_id = str(version["Key"]), str(version.get("VersionId") or "null")
    extra = {"VersionId": version_id} if version_id != "null" else {}
    answer, error = _call(
        lambda: s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER_BYTES - 1}", **extra)
    )
    if error:
        return Stored(key, version_id, None, None, None, None, error)
    parsed = envelope.read_header(answer["Body"].read())
    header, aad = parsed if parsed else (None, None)
    return Stored(key, version_id, answer.get("ServerSideEncryption"), answer.get("SSEKMSKeyId"), header, aad)


# --------------------------------------------------------------------------- cells


def check_default_encryption(s3: Any, bucket: str, key_arn: str) -> str | None:
    """None when the bucket's default encryption is SSE-KMS under the class key with bucket keys."""
    answer, error = _call(lambda: s3.get_bucket_encryption(Bucket=bucket))
    if error:
        return f"no default encryption ({error})"
    rules = answer["ServerSideEncryptionConfiguration"]["Rules"]
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") == "aws:kms" and _same_key(default.get("KMSMasterKeyID"), key_arn):
            return None if rule.get("BucketKeyEnabled") else "SSE-KMS under the class key but bucket keys off"
    found = [r.get("ApplyServerSideEncryptionByDefault", {}) for r in rules]
    return f"default encryption is not SSE-KMS under the class key: {found}"


def check_at_rest(s3: Any, bucket: str, key_arn: str, scan: Scan) -> Cell:
    problem = check_default_encryption(s3, bucket, key_arn)
    if problem:
        return Cell(False, problem)
    if scan.error:
        return Cell(False, f"cannot list objects ({scan.error})")
    bad = [
        f"{o.key} ({o.error or o.sse or 'no SSE'}{'' if o.error or o.sse != 'aws:kms' else ', another key'})"
        for o in scan.objects
        if o.error or o.sse != "aws:kms" or not _same_key(o.kms_key, key_arn)
    ]
    if bad:
        return Cell(
            False,
            f"{len(bad)} of {len(scan.objects)} stored objects not SSE-KMS under the class key: "
            + _examples(bad),
        )
    return Cell(
        True,
        f"default SSE-KMS under the class key with bucket keys; {len(scan.objects)}/{len(scan.objects)} "
        "stored objects SSE-KMS under it",
        "SSE-KMS",
    )


def check_key(kms: Any, key_arn: str) -> Cell:
    answer, error = _call(lambda: kms.describe_key(KeyId=key_arn))
    if error:
        return Cell(False, f"key not readable ({error})")
    meta = answer["KeyMetadata"]
    state, origin = meta.get("KeyState"), meta.get("Origin")
    if origin != "EXTERNAL":
        return Cell(False, f"origin {origin}, not EXTERNAL (material not from the HSM)")
    if state == "PendingImport":
        return Cell(False, "no key material imported (PendingImport)")
    if state != "Enabled":
        return Cell(False, f"key state {state}")
    expiry = meta.get("ValidTo")
    model = meta.get("ExpirationModel", "")
    when = (
        f"expires {expiry:%Y-%m-%d}"
        if expiry
        else ("material expires" if model == "KEY_MATERIAL_EXPIRES" else "material does not expire")
    )
    return Cell(
        True,
        f"Enabled, EXTERNAL, material imported, {when}",
        "imported" + (", expires" if "expire" in when and "not" not in when else ""),
    )


def _bucket_policy(s3: Any, bucket: str) -> tuple[dict[str, Any] | None, str | None]:
    answer, error = _call(lambda: s3.get_bucket_policy(Bucket=bucket))
    if error:
        return None, f"no bucket policy ({error})"
    try:
        policy = json.loads(answer["Policy"])
    except (TypeError, ValueError):
        return None, "bucket policy is not JSON"
    return (policy, None) if isinstance(policy, dict) else (None, "bucket policy is not a JSON object")


def _decide(
    policy: Mapping[str, Any], principal: str, action: str, resource: str, ctx: Mapping[str, str]
) -> str:
    """The bucket policy's decision for one request (same-account IAM grants the action)."""
    from policy.iam import Request, evaluate

    return evaluate(policy, Request(principal, action, dict(ctx), iam_allows=True, resource=resource))


def probe_bucket_policy(
    policy: Mapping[str, Any],
    requests: Iterable[tuple[str, str, str, str, Mapping[str, str], bool]],
) -> list[str]:
    """Each request (label, principal, action, resource, context, must_be_denied): what fails.

    A bad request passes only if the policy denies it explicitly; a good one only if it does not.
    """
    failures = []
    for label, principal, action, resource, ctx, must_deny in requests:
        try:
            denied = _decide(policy, principal, action, resource, ctx) == "explicit-deny"
        except ValueError as exc:
            return [f"cannot be evaluated: {exc}"]
        if must_deny and not denied:
            failures.append(f"does not deny {label}")
        if not must_deny and denied:
            failures.append(f"denies {label}")
    return failures


TLS12 = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.2"}
SSE, SSE_KEY = "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id"


def _principals(roles: RoleOutputs | None, account: str) -> dict[str, str]:
    app = roles.app if roles is not None else f"arn:aws:iam::{account}:role/clefs-app"
    admin = roles.admin if roles is not None else f"arn:aws:iam::{account}:role/clefs-admin"
    return {
        "the app role": app,
        "a key administrator": admin,
        "another account": f"arn:aws:iam::{FOREIGN_ACCOUNT}:role/outsider",
    }


def check_in_transit(
    policy_or_error: tuple[dict[str, Any] | None, str | None],
    bucket: str,
    principals: Mapping[str, str],
    key_arn: str,
    source: str,
) -> Cell:
    policy, error = policy_or_error
    if policy is None:
        return Cell(False, str(error), source=source)
    arn = f"arn:aws:s3:::{bucket}"
    good_put = {**TLS12, SSE: "aws:kms", SSE_KEY: key_arn}
    requests = []
    for who, principal in principals.items():
        for action, resource in (
            ("s3:GetObject", f"{arn}/probe"),
            ("s3:PutObject", f"{arn}/probe"),
            ("s3:ListBucket", arn),
        ):
            verb = action.split(":")[1]
            requests += [
                (
                    f"{verb} over plain HTTP by {who}",
                    principal,
                    action,
                    resource,
                    {"aws:SecureTransport": "false"},
                    True,
                ),
                (
                    f"{verb} over TLS 1.1 by {who}",
                    principal,
                    action,
                    resource,
                    {"aws:SecureTransport": "true", "s3:TlsVersion": "1.1"},
                    True,
                ),
                (
                    f"{verb} over TLS 1.0 by {who}",
                    principal,
                    action,
                    resource,
                    {"aws:SecureTransport": "true", "s3:TlsVersion": "1.0"},
                    True,
                ),
            ]
    requests.append(
        (
            "the app role's PutObject over TLS 1.2 with the class key",
            principals["the app role"],
            "s3:PutObject",
            f"{arn}/probe",
            good_put,
            False,
        )
    )
    requests.append(
        (
            "the app role's GetObject over TLS 1.2",
            principals["the app role"],
            "s3:GetObject",
            f"{arn}/probe",
            TLS12,
            False,
        )
    )
    failures = probe_bucket_policy(policy, requests)
    if failures:
        return Cell(False, f"bucket policy {_examples(failures, 3)}", source=source)
    return Cell(
        True,
        f"bucket policy denies plain HTTP and TLS < 1.2 ({len(requests) - 2} requests), allows TLS 1.2",
        "TLS≥1.2",
        source,
    )


def check_uploads(
    policy_or_error: tuple[dict[str, Any] | None, str | None],
    bucket: str,
    principals: Mapping[str, str],
    key_arn: str,
    source: str,
) -> Cell:
    policy, error = policy_or_error
    if policy is None:
        return Cell(False, str(error), source=source)
    obj = f"arn:aws:s3:::{bucket}/probe"
    other_key = key_arn.rsplit("/", 1)[0] + "/mrk-00000000000000000000000000000000"
    bad = {
        "PutObject without SSE": {},
        "PutObject with SSE-S3 (AES256)": {SSE: "AES256"},
        "PutObject with SSE-KMS and no key id": {SSE: "aws:kms"},
        "PutObject with SSE-KMS under another key": {SSE: "aws:kms", SSE_KEY: other_key},
    }
    requests = [
        (f"{label} by {who}", principal, "s3:PutObject", obj, {**TLS12, **ctx}, True)
        for label, ctx in bad.items()
        for who, principal in principals.items()
    ]
    requests.append(
        (
            "the app role's PutObject with SSE-KMS under the class key",
            principals["the app role"],
            "s3:PutObject",
            obj,
            {**TLS12, SSE: "aws:kms", SSE_KEY: key_arn},
            False,
        )
    )
    failures = probe_bucket_policy(policy, requests)
    if failures:
        return Cell(False, f"bucket policy {_examples(failures, 3)}", source=source)
    return Cell(
        True,
        f"bucket policy denies uploads without SSE-KMS under the class key ({len(requests) - 1} requests), "
        "allows the app role's",
        "SSE-KMS only",
        source,
    )


def check_key_policy(
    kms: Any,
    key_arn: str,
    spec: ClassOutputs,
    region: str,
    role: str,
    roles: RoleOutputs | None,
    source: str,
) -> Cell:
    from policy.rules import KEY_POLICY_ROLES, key_policy_findings

    data_class = spec.name
    bucket_arn = spec.regions[region].bucket_arn
    replication = spec.replication_role
    if roles is None or not (bucket_arn and replication):
        return Cell(
            True,
            f"the stack outputs name no roles ({', '.join(KEY_POLICY_ROLES)}, replication): not checked",
            "–",
            NOT_CHECKED,
        )
    answer, error = _call(lambda: kms.get_key_policy(KeyId=key_arn, PolicyName="default"))
    if error:
        return Cell(False, f"key policy not readable ({error})", source=source)
    try:
        document = json.loads(answer["Policy"])
    except (TypeError, ValueError):
        return Cell(False, "key policy is not JSON", source=source)
    findings = key_policy_findings(
        document,
        data_class=data_class,
        region=region,
        copy=role,
        account_id=key_arn.split(":")[4],
        roles={r: roles.arn(r) for r in KEY_POLICY_ROLES},
        replication_role=replication,
        bucket_arn_in_region=bucket_arn,
    )
    if findings:
        return Cell(False, f"key policy: {_examples(findings, 3)}", source=source)
    return Cell(
        True, "key policy separates administration, use and import (policy pack rules)", "SoD", source
    )


def check_end_to_end(data_class: str, required: bool, class_keys: set[str], scan: Scan) -> Cell:
    if scan.error:
        return Cell(False, f"cannot list objects ({scan.error})")
    prefix = f"{data_class}/"
    plain, wrong, not_e2e = [], [], []
    for o in scan.objects:
        h = o.header
        if o.error or h is None:
            plain.append(f"{o.key} ({o.error or 'no clefs envelope'})")
        elif (
            h.data_class != data_class
            or not o.key.startswith(prefix)
            or h.record_id != o.key[len(prefix) :]
            or not any(_same_key(h.kms_key_arn, k) for k in class_keys)
        ):
            wrong.append(f"{o.key} (claims {h.data_class}/{h.record_id})")
        elif required and h.e2e != envelope.E2E_AGE:
            not_e2e.append(o.key)
        elif not required and h.e2e is not None:
            wrong.append(f"{o.key} (end-to-end in a class that is not)")
    total = len(scan.objects)
    if plain:
        return Cell(
            False,
            f"{len(plain)} of {total} stored objects carry no client-side envelope: " + _examples(plain),
        )
    if wrong:
        return Cell(
            False,
            f"{len(wrong)} of {total} stored objects are not records of this class: " + _examples(wrong),
        )
    if not_e2e:
        return Cell(
            False,
            f"{len(not_e2e)} of {total} stored objects are not end-to-end encrypted: " + _examples(not_e2e),
        )
    if not total:
        return Cell(True, "no object stored", "empty")
    if required:
        return Cell(
            True, f"{total}/{total} stored objects end-to-end (age) inside the envelope", f"{total} age"
        )
    return Cell(True, f"not required; {total}/{total} stored objects client-side enveloped", f"{total} env")


def check_replication_rule(
    s3: Any, bucket: str, replica_bucket: str, replica_key_arn: str, source: str
) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_replication(Bucket=bucket))
    if error:
        return Cell(False, f"no replication configured ({error})", source=source)
    for rule in answer["ReplicationConfiguration"].get("Rules", []):
        destination = rule.get("Destination", {})
        target = str(destination.get("Bucket", "")).removeprefix("arn:aws:s3:::")
        if rule.get("Status") != "Enabled" or target != replica_bucket:
            continue
        replica_key = destination.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
        sse = rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {}).get("Status")
        whole = "Filter" in rule and not (
            rule["Filter"].get("Prefix") or rule["Filter"].get("Tag") or rule["Filter"].get("And")
        )
        if not _same_key(replica_key, replica_key_arn):
            return Cell(False, f"replicates to {target} but not under the replica key", source=source)
        if sse != "Enabled":
            return Cell(False, "SSE-KMS encrypted objects are not selected for replication", source=source)
        if not whole:
            return Cell(
                False, "the replication rule is not a whole-bucket V2 rule (Filter {})", source=source
            )
        return Cell(True, f"rule: every object to {target} under the replica key", "rule → replica", source)
    return Cell(False, f"no enabled rule replicating to {replica_bucket}", source=source)


def check_replica_content(primary: Scan, replica: Scan, source_bucket: str) -> Cell:
    """Every version of the primary is in the replica (identical envelope header)."""
    if primary.error or replica.error:
        return Cell(False, f"cannot list objects ({primary.error or replica.error})")
    present = {o.aad for o in replica.objects if o.aad is not None}
    wanted = [o for o in primary.objects if o.aad is not None]
    missing = [f"{o.key} ({o.version_id[:8]})" for o in wanted if o.aad not in present]
    if missing:
        return Cell(
            False,
            f"{len(missing)} of {len(wanted)} versions of {source_bucket} are not in this replica: "
            + _examples(missing),
        )
    return Cell(
        True,
        f"holds {len(wanted)}/{len(wanted)} versions of {source_bucket}",
        f"{len(wanted)}/{len(wanted)} copied",
    )


def check_public_access(s3: Any, bucket: str, source: str) -> Cell:
    answer, error = _call(lambda: s3.get_public_access_block(Bucket=bucket))
    if error:
        return Cell(False, f"no public access block ({error})", source=source)
    config = answer["PublicAccessBlockConfiguration"]
    off = [name for name, on in config.items() if not on]
    if off:
        return Cell(False, f"public access not fully blocked: {', '.join(off)} off", source=source)
    return Cell(True, "all four blocks on", "4/4 blocked", source)


def check_versioning(s3: Any, bucket: str) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_versioning(Bucket=bucket))
    if error or answer.get("Status") != "Enabled":
        return Cell(False, f"versioning {answer.get('Status') if answer else error or 'off'}")
    return Cell(True, "enabled")


# --------------------------------------------------------------------------- the report


Place = tuple[str, str, RegionOutputs]  # (class, region, its key and bucket)


def assess(
    outputs: Outputs,
    client_for: ClientFor,
    *,
    max_objects: int = DEFAULT_MAX_OBJECTS,
    emulator: bool = True,
    workers: int = WORKERS,
) -> Report:
    """Prove every claim for every class and region listed in the stack outputs.

    `outputs` is the typed contract (hsm_lab.aws.deployment.load_stack) or a document, checked
    here. `emulator` (LocalStack) marks what it does not enforce as ``configured``.
    """
    stack = stack_outputs(outputs)
    if not stack.classes:
        raise errors.InputError("the stack outputs list no data class: deploy the stack first")
    if max_objects < 1:
        raise errors.InputError("--max-objects must be at least 1")
    primary_region = stack.primary_region
    places = [
        (data_class, region, where)
        for data_class, spec in sorted(stack.classes.items())
        for region, where in sorted(spec.regions.items(), key=lambda item: item[0] != primary_region)
    ]
    scans = scan_buckets(places, client_for, max_objects, workers)
    enforced = CONFIGURED if emulator else OBSERVED
    rows = [_row(stack, place, scans, client_for, enforced, max_objects) for place in places]
    return Report(rows, "localstack" if emulator else "aws", max_objects)


def scan_buckets(
    places: list[Place], client_for: ClientFor, max_objects: int, workers: int
) -> dict[tuple[str, str], Scan]:
    """List every bucket's object versions, then read each version's first bytes (threads)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        listings = dict(
            zip(
                [(c, r) for c, r, _ in places],
                pool.map(lambda p: list_versions(client_for("s3", p[1]), p[2].bucket, max_objects), places),
                strict=True,
            )
        )
        jobs = [((c, r), v) for c, r, w in places for v in listings[(c, r)][0]]
        buckets = {(c, r): w.bucket for c, r, w in places}
        stored = list(
            pool.map(lambda job: read_stored(client_for("s3", job[0][1]), buckets[job[0]], job[1]), jobs)
        )
    scans: dict[tuple[str, str], Scan] = {
        place: Scan([], listing[1], listing[2]) for place, listing in listings.items()
    }
    for (place, _version), item in zip(jobs, stored, strict=True):
        scans[place].objects.append(item)
    return scans


def _row(
    stack: StackOutputs,
    place: Place,
    scans: Mapping[tuple[str, str], Scan],
    client_for: ClientFor,
    enforced: str,
    max_objects: int,
) -> Row:
    """Every cell of one class in one region."""
    data_class, region, where = place
    spec = stack.classes[data_class]
    role = "primary" if region == stack.primary_region else "replica"
    bucket, key_arn = where.bucket, where.key_arn
    scan = scans[(data_class, region)]
    row = Row(data_class, region, role, bucket, key_arn, spec.end_to_end, len(scan.objects), scan.truncated)
    s3, kms = client_for("s3", region), client_for("kms", region)
    principals = _principals(stack.roles, where.account)
    policy = _bucket_policy(s3, bucket)
    row.cells["at_rest"] = check_at_rest(s3, bucket, key_arn, scan)
    row.cells["uploads"] = check_uploads(policy, bucket, principals, key_arn, enforced)
    row.cells["key"] = check_key(kms, key_arn)
    row.cells["key_policy"] = check_key_policy(kms, key_arn, spec, region, role, stack.roles, enforced)
    row.cells["in_transit"] = check_in_transit(policy, bucket, principals, key_arn, enforced)
    row.cells["end_to_end"] = _end_to_end(spec, scan, max_objects)
    row.cells["replication"] = _replication(stack, spec, place, scans, s3, enforced)
    row.cells["public_access"] = check_public_access(s3, bucket, enforced)
    row.cells["versioning"] = check_versioning(s3, bucket)
    return row


def _end_to_end(spec: ClassOutputs, scan: Scan, max_objects: int) -> Cell:
    class_keys = {w.key_arn for w in spec.regions.values()}
    cell = check_end_to_end(spec.name, spec.end_to_end, class_keys, scan)
    if scan.truncated:
        return Cell(
            False,
            f"scanned only the first {max_objects} object versions (--max-objects): "
            "the rest is not shown; raise the bound",
        )
    return cell


def _replication(
    stack: StackOutputs,
    spec: ClassOutputs,
    place: Place,
    scans: Mapping[tuple[str, str], Scan],
    s3: Any,
    enforced: str,
) -> Cell:
    """Primary row: the rule to each replica (the last one stands). Replica row: what was copied."""
    data_class, region, where = place
    primary = stack.primary_region
    if region != primary:
        return check_replica_content(
            scans[(data_class, primary)], scans[place[:2]], spec.regions[primary].bucket
        )
    cell = Cell(False, "the class has no replica region")
    for replica, target in spec.regions.items():
        if replica != primary:
            cell = check_replication_rule(s3, where.bucket, target.bucket, target.key_arn, enforced)
    return cell

"""`verify`: what is encrypted how, read from live state (LocalStack or AWS).

For each data class and region of the deployed stack (its outputs say which
keys and buckets exist), it asks S3 and KMS, never the Pulumi program:

- at rest: bucket default encryption is SSE-KMS under that class's key in that
  region, with bucket keys; the key is Enabled, EXTERNAL (BYOK), its material
  imported, and when it expires;
- in transit: the bucket policy denies non-TLS requests and TLS below 1.2;
- end to end: sampled objects carry the client-side envelope, and for classes
  that require it, the end-to-end (age) layer;
- replication from the primary bucket to the replica under the replica key;
- public access blocked (all four switches) and versioning on.

Every failed check is a gap; `verify` exits non-zero and names each one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors

ClientFor = Callable[[str, str], Any]
CHECKS = ("at_rest", "key", "in_transit", "end_to_end", "replication", "public_access", "versioning")
ENVELOPE_MAGIC = b"CLEF"


@dataclass
class Cell:
    """One check for one class in one region."""

    ok: bool
    detail: str
    short: str = ""  # what the table shows; `detail` goes to gaps and --json

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

    @property
    def gaps(self) -> list[str]:
        return [gap for row in self.rows for gap in row.gaps()]

    def to_json(self) -> str:
        return json.dumps(
            {"ok": not self.gaps, "gaps": self.gaps, "rows": [asdict(row) for row in self.rows]}, indent=2
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


def _call(action: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return action(), None
    except ClientError as exc:
        return None, _code(exc)
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot read live state: {exc}") from None


def _same_key(reference: str | None, key_arn: str) -> bool:
    if not reference:
        return False
    return reference == key_arn or key_arn.endswith("/" + reference.split("/")[-1])


def check_at_rest(s3: Any, bucket: str, key_arn: str) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_encryption(Bucket=bucket))
    if error:
        return Cell(False, f"no default encryption ({error})")
    rules = answer["ServerSideEncryptionConfiguration"]["Rules"]
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") == "aws:kms" and _same_key(default.get("KMSMasterKeyID"), key_arn):
            bucket_key = "bucket key on" if rule.get("BucketKeyEnabled") else "bucket key OFF"
            if not rule.get("BucketKeyEnabled"):
                return Cell(False, "SSE-KMS under the class key but bucket keys are off")
            return Cell(True, f"SSE-KMS, class key, {bucket_key}", "SSE-KMS class key")
    found = [r.get("ApplyServerSideEncryptionByDefault", {}) for r in rules]
    return Cell(False, f"default encryption is not SSE-KMS under the class key: {found}")


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


def _statements(policy_text: str) -> list[dict[str, Any]]:
    policy = json.loads(policy_text)
    statements = policy.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def check_in_transit(s3: Any, bucket: str) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_policy(Bucket=bucket))
    if error:
        return Cell(False, f"no bucket policy ({error})")
    deny_plain = deny_old_tls = False
    for statement in _statements(answer["Policy"]):
        if statement.get("Effect") != "Deny":
            continue
        condition = statement.get("Condition", {})
        secure = condition.get("Bool", {}).get("aws:SecureTransport")
        if str(secure).lower() == "false":
            deny_plain = True
        tls = condition.get("NumericLessThan", {}).get("s3:TlsVersion")
        if tls is not None and float(str(tls)) >= 1.2:
            deny_old_tls = True
    if deny_plain and deny_old_tls:
        return Cell(True, "policy denies non-TLS and TLS < 1.2", "TLS >= 1.2 only")
    missing = [n for n, ok in (("non-TLS deny", deny_plain), ("TLS < 1.2 deny", deny_old_tls)) if not ok]
    return Cell(False, f"bucket policy lacks {', '.join(missing)}")


def envelope_header(blob: bytes) -> dict[str, Any] | None:
    """The JSON header of a clefs.envelope/v1 object, or None if it is not one."""
    if len(blob) < 9 or blob[:4] != ENVELOPE_MAGIC or blob[4] != 1:
        return None
    length = int.from_bytes(blob[5:9], "big")
    try:
        header = json.loads(blob[9 : 9 + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def check_end_to_end(s3: Any, bucket: str, data_class: str, required: bool, sample: int) -> Cell:
    listing, error = _call(lambda: s3.list_objects_v2(Bucket=bucket, MaxKeys=sample))
    if error:
        return Cell(False, f"cannot list objects ({error})")
    keys = [item["Key"] for item in listing.get("Contents", [])][:sample]
    if not keys:
        if required:
            return Cell(False, "no object to sample: end-to-end encryption not shown")
        return Cell(True, "not required (no object sampled)", "not required")
    e2e = plain = 0
    for key in keys:
        obj, error = _call(lambda k=key: s3.get_object(Bucket=bucket, Key=k, Range="bytes=0-65535"))
        if error:
            return Cell(False, f"cannot read {key} ({error})")
        header = envelope_header(obj["Body"].read())
        if header is None or header.get("data_class") != data_class:
            plain += 1
        elif header.get("e2e"):
            e2e += 1
    if plain:
        return Cell(False, f"{plain} of {len(keys)} sampled objects carry no client-side envelope")
    if required and e2e < len(keys):
        return Cell(False, f"{len(keys) - e2e} of {len(keys)} sampled objects are not end-to-end encrypted")
    if required:
        return Cell(
            True,
            f"{e2e}/{len(keys)} sampled objects end-to-end (age) inside the envelope",
            f"{e2e}/{len(keys)} age",
        )
    return Cell(
        True, f"not required; {len(keys)}/{len(keys)} sampled objects client-side enveloped", "not required"
    )


def check_replication(s3: Any, bucket: str, replica_bucket: str | None, replica_key_arn: str | None) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_replication(Bucket=bucket))
    if error:
        return Cell(False, f"no replication configured ({error})")
    for rule in answer["ReplicationConfiguration"].get("Rules", []):
        destination = rule.get("Destination", {})
        target = str(destination.get("Bucket", "")).removeprefix("arn:aws:s3:::")
        replica_key = destination.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
        sse = rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {}).get("Status")
        if rule.get("Status") == "Enabled" and target == replica_bucket:
            if not _same_key(replica_key, replica_key_arn or ""):
                return Cell(False, f"replicates to {target} but not under the replica key")
            if sse != "Enabled":
                return Cell(False, "SSE-KMS encrypted objects are not selected for replication")
            return Cell(True, f"to {target} under the replica key", "→ replica")
    return Cell(False, f"no enabled rule replicating to {replica_bucket}")


def check_public_access(s3: Any, bucket: str) -> Cell:
    answer, error = _call(lambda: s3.get_public_access_block(Bucket=bucket))
    if error:
        return Cell(False, f"no public access block ({error})")
    config = answer["PublicAccessBlockConfiguration"]
    off = [name for name, on in config.items() if not on]
    if off:
        return Cell(False, f"public access not fully blocked: {', '.join(off)} off")
    return Cell(True, "all four blocks on", "4/4 blocked")


def check_versioning(s3: Any, bucket: str) -> Cell:
    answer, error = _call(lambda: s3.get_bucket_versioning(Bucket=bucket))
    if error or answer.get("Status") != "Enabled":
        return Cell(False, f"versioning {answer.get('Status') if answer else error or 'off'}")
    return Cell(True, "enabled")


def assess(outputs: dict[str, Any], client_for: ClientFor, *, sample: int = 3) -> Report:
    """Read live state for every class and region listed in the stack outputs."""
    try:
        classes = outputs["classes"]
        primary_region = outputs.get("primary_region", "eu-west-3")
    except (KeyError, TypeError):
        raise errors.InputError("stack outputs have no 'classes': deploy the stack first") from None
    if not classes:
        raise errors.InputError("the stack outputs list no data class: deploy the stack first")
    rows = []
    for data_class, spec in sorted(classes.items()):
        regions = spec["regions"]
        replica_regions = [r for r in regions if r != primary_region]
        required = bool(spec.get("end_to_end"))
        for region, where in sorted(regions.items(), key=lambda item: item[0] != primary_region):
            role = "primary" if region == primary_region else "replica"
            row = Row(data_class, region, role, where["bucket"], where["key_arn"], required)
            s3, kms = client_for("s3", region), client_for("kms", region)
            row.cells["at_rest"] = check_at_rest(s3, where["bucket"], where["key_arn"])
            row.cells["key"] = check_key(kms, where["key_arn"])
            row.cells["in_transit"] = check_in_transit(s3, where["bucket"])
            row.cells["end_to_end"] = check_end_to_end(s3, where["bucket"], data_class, required, sample)
            if role == "primary":
                for replica in replica_regions:
                    row.cells["replication"] = check_replication(
                        s3, where["bucket"], regions[replica]["bucket"], regions[replica]["key_arn"]
                    )
            else:
                row.cells["replication"] = Cell(
                    True, f"replica of {regions[primary_region]['bucket']}", "replica"
                )
            row.cells["public_access"] = check_public_access(s3, where["bucket"])
            row.cells["versioning"] = check_versioning(s3, where["bucket"])
            rows.append(row)
    return Report(rows)

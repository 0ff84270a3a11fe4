"""At rest: default and per-object SSE-KMS under the class key, the client-side envelope (end to
end), public access blocks and versioning."""

from __future__ import annotations

from typing import Any

from hsm_lab.compliance.report import Cell, _call, _examples, _same_key
from hsm_lab.compliance.scan import Scan
from hsm_lab.datapath import envelope


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

"""Bucket policy behaviour, probed with the evaluator (policy/iam.py), not matched textually."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policy.iam import Request, evaluate
from policy.props import bucket_arn

_PROBE_ACCOUNT = "000000000000"
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

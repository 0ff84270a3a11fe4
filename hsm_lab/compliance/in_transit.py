"""The bucket policy, evaluated (policy/iam.py): TLS >= 1.2 only in transit, SSE-KMS under the
class key only for uploads, for the app role, a key administrator and another account."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from hsm_lab.compliance.report import FOREIGN_ACCOUNT, Cell, _call, _examples
from infra.model.outputs import RoleOutputs


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


Probe = tuple[str, str, str, str, Mapping[str, str], bool]  # label, principal, action, resource, ctx, deny?
INSECURE = (  # what must be denied: (how, request context)
    ("plain HTTP", {"aws:SecureTransport": "false"}),
    ("TLS 1.1", {"aws:SecureTransport": "true", "s3:TlsVersion": "1.1"}),
    ("TLS 1.0", {"aws:SecureTransport": "true", "s3:TlsVersion": "1.0"}),
)


def transit_requests(bucket: str, principals: Mapping[str, str], key_arn: str) -> list[Probe]:
    """Get, Put and List over plain HTTP, TLS 1.1 and 1.0 by every principal (each must be denied),
    then the app role's Put (under the class key) and Get over TLS 1.2 (each must go through)."""
    arn = f"arn:aws:s3:::{bucket}"
    requests: list[Probe] = []
    for who, principal in principals.items():
        for action, resource in (
            ("s3:GetObject", f"{arn}/probe"),
            ("s3:PutObject", f"{arn}/probe"),
            ("s3:ListBucket", arn),
        ):
            verb = action.split(":")[1]
            requests += [
                (f"{verb} over {how} by {who}", principal, action, resource, ctx, True)
                for how, ctx in INSECURE
            ]
    app = principals["the app role"]
    good_put = {**TLS12, SSE: "aws:kms", SSE_KEY: key_arn}
    requests.append(
        (
            "the app role's PutObject over TLS 1.2 with the class key",
            app,
            "s3:PutObject",
            f"{arn}/probe",
            good_put,
            False,
        )
    )
    requests.append(
        ("the app role's GetObject over TLS 1.2", app, "s3:GetObject", f"{arn}/probe", TLS12, False)
    )
    return requests


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
    requests = transit_requests(bucket, principals, key_arn)
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

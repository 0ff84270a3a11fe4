"""KMS class key policies: separation of duties, probed with the evaluator (policy/iam.py).

`key_policy_findings` asks the evaluator what each role can do with the key, with and without
an IAM policy granting kms:*, and lists every answer that breaks the separation of duties:
administration, use and key-material import are held by different roles, the auditor only
reads, the deployer alone may change the policy, and nobody else (another account included)
gets anything. The probes below run in a fixed order, so the findings come in a stable order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.model.data_classes import COPY_PRIMARY, ENCRYPTION_CONTEXT_KEY
from policy.iam import Request, allowed

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
_FOREIGN = "arn:aws:iam::999999999999:role/clefs-policy-probe-foreign"


@dataclass(frozen=True)
class _Probe:
    """Who asks, and in which request contexts, when one class key policy is probed."""

    admin: str
    app: str
    ceremony: str
    auditor: str
    deployer: str
    replication: str
    outsider: str  # another role of the same account
    root: str  # the account's IAM principals
    own: Mapping[str, str]  # the class's own encryption context
    other: Mapping[str, str]  # another class's encryption context
    via_s3: Mapping[str, str]  # through S3, for an object of the class bucket in this region
    via_s3_elsewhere: Mapping[str, str]  # through S3, for an object of another bucket


def _probe(
    data_class: str,
    region: str,
    account_id: str,
    roles: Mapping[str, str],
    replication_role: str,
    bucket_arn_in_region: str,
) -> _Probe:
    via_s3 = {
        "kms:ViaService": f"s3.{region}.amazonaws.com",
        "kms:EncryptionContext:aws:s3:arn": f"{bucket_arn_in_region}/probe",
    }
    return _Probe(
        admin=roles["admin"],
        app=roles["app"],
        ceremony=roles["ceremony"],
        auditor=roles["auditor"],
        deployer=roles["deployer"],
        replication=replication_role,
        outsider=f"arn:aws:iam::{account_id}:role/clefs-policy-probe-outsider",
        root=f"arn:aws:iam::{account_id}:root",
        own={f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": data_class},
        other={f"kms:EncryptionContext:{ENCRYPTION_CONTEXT_KEY}": f"{data_class}-other"},
        via_s3=via_s3,
        via_s3_elsewhere={**via_s3, "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::elsewhere/probe"},
    )


class _Findings:
    """The breaches found so far, and the one question asked of the evaluator."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.items: list[str] = []

    def expect(
        self, label: str, who: str, action: str, ctx: Mapping[str, str], want: bool, *, iam: bool
    ) -> None:
        try:
            got = allowed(self.doc, Request(who, action, ctx, iam_allows=iam))
        except ValueError as exc:
            self.items.append(f"cannot be evaluated: {exc}")
            return
        if got != want:
            parts = [label, "cannot" if want else "can", action, _ctx_label(ctx)]
            if iam:
                parts.append("even with an IAM policy granting kms:*")
            self.items.append(" ".join(p for p in parts if p))


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
    p = _probe(data_class, region, account_id, roles, replication_role, bucket_arn_in_region)
    found = _Findings(doc)
    found.items.extend(_wildcard_findings(doc))
    for iam in (False, True):
        _no_use_beyond_the_app(found, p, iam=iam)
        _no_import_or_administration_beyond_their_roles(found, p, iam=iam)
        _auditor_and_deployer_never_use_nobody_grants_itself(found, p, iam=iam)
    _nothing_on_the_policy_alone_for_others(found, p)
    _each_role_can_do_its_job(found, p)
    _replication_role(found, p, copy)
    return list(dict.fromkeys(found.items))


def _wildcard_findings(doc: Mapping[str, Any]) -> list[str]:
    findings: list[str] = []
    for statement in doc.get("Statement") or []:
        principal = statement.get("Principal") if isinstance(statement, Mapping) else None
        if isinstance(statement, Mapping) and statement.get("Effect") == "Allow" and _wildcard(principal):
            findings.append(f"statement {statement.get('Sid') or '(no Sid)'} allows a wildcard principal")
    return findings


def _wildcard(principal: Any) -> bool:
    """Principal "*" or an AWS principal list holding "*"."""
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    aws = principal.get("AWS")
    return "*" in (aws if isinstance(aws, list) else [aws])


def _no_use_beyond_the_app(found: _Findings, p: _Probe, *, iam: bool) -> None:
    """Only the app role uses the key, and only for its own class (directly or via its bucket)."""
    for action in _USE_PROBES:
        for ctx in (p.own, p.via_s3):
            found.expect("key administrators", p.admin, action, ctx, False, iam=iam)
            found.expect("the ceremony role", p.ceremony, action, ctx, False, iam=iam)
            found.expect("other account principals", p.outsider, action, ctx, False, iam=iam)
        if action not in _APP_ACTIONS:
            found.expect("the app role", p.app, action, p.own, False, iam=iam)
    for action in _APP_ACTIONS:
        found.expect("the app role", p.app, action, p.other, False, iam=iam)
        found.expect("the app role", p.app, action, {}, False, iam=iam)
        found.expect("the app role", p.app, action, p.via_s3_elsewhere, False, iam=iam)


def _no_import_or_administration_beyond_their_roles(found: _Findings, p: _Probe, *, iam: bool) -> None:
    """Import is the ceremony's, administration the administrators', policy changes the deployer's."""
    for action in _IMPORT_ACTIONS:
        for who, label in (
            (p.admin, "key administrators"),
            (p.app, "the app role"),
            (p.outsider, "other account principals"),
            (p.replication, "the replication role"),
        ):
            found.expect(label, who, action, {}, False, iam=iam)
    for action in (*_ADMIN_PROBES, *_POLICY_CHANGE_PROBES):
        for who, label in (
            (p.app, "the app role"),
            (p.ceremony, "the ceremony role"),
            (p.replication, "the replication role"),
        ):
            found.expect(label, who, action, {}, False, iam=iam)
    for action in _POLICY_CHANGE_PROBES:
        for who, label in (
            (p.admin, "key administrators"),
            (p.auditor, "the auditor"),
            (p.root, "the account's IAM principals"),
            (p.outsider, "other account principals"),
        ):
            if who != p.deployer:  # on LocalStack the account root runs the program: it is the deployer
                found.expect(label, who, action, {}, False, iam=iam)


def _auditor_and_deployer_never_use_nobody_grants_itself(found: _Findings, p: _Probe, *, iam: bool) -> None:
    for action in (*_USE_PROBES, *_IMPORT_ACTIONS, "kms:DisableKey"):
        found.expect("the auditor", p.auditor, action, p.own, False, iam=iam)
    for action in (*_USE_PROBES, *_IMPORT_ACTIONS):
        found.expect("the deployer", p.deployer, action, p.own, False, iam=iam)
    for who, label in (
        (p.admin, "key administrators"),
        (p.app, "the app role"),
        (p.outsider, "other account principals"),
    ):
        found.expect(label, who, "kms:CreateGrant", {"kms:GrantIsForAWSResource": "false"}, False, iam=iam)


def _nothing_on_the_policy_alone_for_others(found: _Findings, p: _Probe) -> None:
    """Nobody else administers the key on the policy's word alone (PutKeyPolicy is not open), and
    another account gets nothing even if its own IAM policies grant kms:*."""
    for action in (*_ADMIN_PROBES, "kms:CreateGrant"):
        found.expect("other account principals", p.outsider, action, {}, False, iam=False)
    for action in (*_ADMIN_PROBES, *_USE_PROBES, *_IMPORT_ACTIONS):
        for ctx in ({}, p.own, p.via_s3):
            found.expect("another account", _FOREIGN, action, ctx, False, iam=True)


def _each_role_can_do_its_job(found: _Findings, p: _Probe) -> None:
    for action in _APP_ACTIONS:
        found.expect("the app role", p.app, action, p.own, True, iam=False)
        found.expect("the app role", p.app, action, p.via_s3, True, iam=False)
    for action in _IMPORT_ACTIONS:
        found.expect("the ceremony role", p.ceremony, action, {}, True, iam=False)
    for action in _ADMIN_PROBES:
        found.expect("key administrators", p.admin, action, {}, True, iam=False)
    for action in _AUDITOR_PROBES:
        found.expect("the auditor", p.auditor, action, {}, True, iam=False)
    for action in _POLICY_CHANGE_PROBES:  # lock-out safety: the deployer can still change it
        found.expect("the deployer (lock-out safety)", p.deployer, action, {}, True, iam=False)


def _replication_role(found: _Findings, p: _Probe, copy: str) -> None:
    """The replication role decrypts with the primary key and encrypts with the replica key, via S3 only."""
    wanted = ("kms:Decrypt",) if copy == COPY_PRIMARY else ("kms:Encrypt", "kms:GenerateDataKey")
    for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"):
        found.expect("the replication role", p.replication, action, p.via_s3, action in wanted, iam=False)
        found.expect("the replication role", p.replication, action, p.own, False, iam=True)


def _ctx_label(ctx: Mapping[str, str]) -> str:
    if not ctx:
        return ""
    return "(" + ", ".join(f"{k.split(':', 1)[-1]}={v}" for k, v in ctx.items()) + ")"

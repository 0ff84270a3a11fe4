"""Policy documents judged by behaviour: the evaluator's semantics, then each document's decisions."""

from __future__ import annotations

import pytest

from infra.program import documents
from policy.iam import ALLOW, DENY, IMPLICIT_DENY, Request, evaluate
from policy.rules import key_policy_findings, sse_kms_put_problems, tls_problems

ACCT = "111122223333"
ADMIN = f"arn:aws:iam::{ACCT}:role/clefs-admin"
APP = f"arn:aws:iam::{ACCT}:role/clefs-app"
CEREMONY = f"arn:aws:iam::{ACCT}:role/clefs-ceremony"
AUDITOR = f"arn:aws:iam::{ACCT}:role/clefs-auditor"
DEPLOYER = f"arn:aws:iam::{ACCT}:role/clefs-deployer"
REPLICATION = f"arn:aws:iam::{ACCT}:role/clefs-appointments-replication"
OUTSIDER = f"arn:aws:iam::{ACCT}:role/someone-else"
ROOT = f"arn:aws:iam::{ACCT}:root"
BUCKET = "arn:aws:s3:::clefs-appointments-eu-west-3-abc1234"
KEY = f"arn:aws:kms:eu-west-3:{ACCT}:key/mrk-0123456789abcdef0123456789abcdef"
OWN = {"kms:EncryptionContext:data_class": "appointments"}
OTHER = {"kms:EncryptionContext:data_class": "health-documents"}
VIA_S3 = {"kms:ViaService": "s3.eu-west-3.amazonaws.com", "kms:EncryptionContext:aws:s3:arn": f"{BUCKET}/o"}


def policy(copy: str = "primary") -> dict[str, object]:
    return documents.key_policy(
        account_id=ACCT,
        region="eu-west-3",
        data_class="appointments",
        copy=copy,
        admin_arn=ADMIN,
        app_arn=APP,
        ceremony_arn=CEREMONY,
        replication_role_arn=REPLICATION,
        bucket_arn=BUCKET,
        deployer_arn=DEPLOYER,
        auditor_arn=AUDITOR,
    )


# -- evaluator semantics ----------------------------------------------------------------------
def _doc(*statements: dict[str, object]) -> dict[str, object]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


ALLOW_ROOT = {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": "kms:*", "Resource": "*"}


@pytest.mark.parametrize(
    ("doc", "request_", "decision"),
    [
        (_doc(ALLOW_ROOT), Request(APP, "kms:Decrypt"), IMPLICIT_DENY),
        (_doc(ALLOW_ROOT), Request(APP, "kms:Decrypt", iam_allows=True), ALLOW),
        (
            _doc(ALLOW_ROOT),
            Request("arn:aws:iam::999999999999:role/x", "kms:Decrypt", iam_allows=True),
            IMPLICIT_DENY,
        ),
        (
            _doc(ALLOW_ROOT, {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}),
            Request(APP, "kms:Decrypt", iam_allows=True),
            DENY,
        ),
        (
            _doc(
                {"Effect": "Deny", "Principal": {"AWS": APP}, "NotAction": ["kms:Encrypt"], "Resource": "*"}
            ),
            Request(APP, "kms:Encrypt"),
            IMPLICIT_DENY,
        ),
        (
            _doc(
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": APP},
                    "Action": "kms:GenerateDataKey*",
                    "Resource": "*",
                }
            ),
            Request(APP, "kms:GenerateDataKeyWithoutPlaintext"),
            ALLOW,
        ),
        (
            _doc(
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "kms:CreateGrant",
                    "Resource": "*",
                    "Condition": {"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}},
                }
            ),
            Request(APP, "kms:CreateGrant"),
            DENY,
        ),
        (
            _doc(
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:PutObject",
                    "Resource": "*",
                    "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
                }
            ),
            Request(APP, "s3:PutObject", resource="arn:aws:s3:::b/k"),
            DENY,
        ),
        (
            _doc(
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": "arn:aws:s3:::b/*",
                    "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}},
                }
            ),
            Request(APP, "s3:PutObject", resource="arn:aws:s3:::other/k"),
            IMPLICIT_DENY,
        ),
    ],
)
def test_evaluator_semantics(doc: dict[str, object], request_: Request, decision: str) -> None:
    assert evaluate(doc, request_) == decision


@pytest.mark.parametrize(
    "statement",
    [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:CurrentTime": "2030"}},
        },
        {"Effect": "Allow", "Principal": {"Federated": "x"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Maybe", "Principal": "*", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "NotAction": "kms:Decrypt", "Resource": "*"},
        {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "arn:aws:kms:::key/x"},
    ],
)
def test_evaluator_refuses_what_it_does_not_understand(statement: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        evaluate(_doc(statement), Request(APP, "kms:Decrypt"))


# -- the class key policy -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "action", "context", "iam", "decision"),
    [
        # key administrators administer, never use the key, its material or its policy
        (ADMIN, "kms:PutKeyPolicy", {}, True, DENY),
        (ADMIN, "kms:ScheduleKeyDeletion", {}, True, DENY),
        (ADMIN, "kms:DisableKey", {}, False, ALLOW),
        (ADMIN, "kms:DescribeKey", {}, False, ALLOW),
        (ADMIN, "kms:Decrypt", OWN, True, DENY),
        (ADMIN, "kms:GenerateDataKey", VIA_S3, True, DENY),
        (ADMIN, "kms:ImportKeyMaterial", {}, True, DENY),
        (ADMIN, "kms:GetParametersForImport", {}, True, DENY),
        (ADMIN, "kms:DeleteImportedKeyMaterial", {}, True, DENY),
        (ADMIN, "kms:CreateGrant", {"kms:GrantIsForAWSResource": "false"}, True, DENY),
        # the app: Encrypt/Decrypt/GenerateDataKey, only under its class context
        (APP, "kms:Encrypt", OWN, False, ALLOW),
        (APP, "kms:Decrypt", OWN, False, ALLOW),
        (APP, "kms:GenerateDataKey", OWN, False, ALLOW),
        (APP, "kms:GenerateDataKey", VIA_S3, False, ALLOW),
        (APP, "kms:Decrypt", OTHER, True, IMPLICIT_DENY),
        (APP, "kms:Decrypt", {}, True, IMPLICIT_DENY),
        (
            APP,
            "kms:Decrypt",
            {**VIA_S3, "kms:ViaService": "s3.eu-central-1.amazonaws.com"},
            False,
            IMPLICIT_DENY,
        ),
        (APP, "kms:GenerateDataKeyWithoutPlaintext", OWN, True, DENY),
        (APP, "kms:ReEncryptFrom", OWN, True, DENY),
        (APP, "kms:PutKeyPolicy", {}, True, DENY),
        (APP, "kms:ImportKeyMaterial", {}, True, DENY),
        # the ceremony: the three key-material actions, nothing else
        (CEREMONY, "kms:GetParametersForImport", {}, False, ALLOW),
        (CEREMONY, "kms:ImportKeyMaterial", {}, False, ALLOW),
        (CEREMONY, "kms:DeleteImportedKeyMaterial", {}, False, ALLOW),
        (CEREMONY, "kms:Decrypt", OWN, True, DENY),
        (CEREMONY, "kms:DescribeKey", {}, True, DENY),
        (CEREMONY, "kms:PutKeyPolicy", {}, True, DENY),
        # replication (primary copy): Decrypt through S3 for its own bucket only
        (REPLICATION, "kms:Decrypt", VIA_S3, False, ALLOW),
        (REPLICATION, "kms:Encrypt", VIA_S3, True, DENY),
        (REPLICATION, "kms:Decrypt", OWN, True, IMPLICIT_DENY),
        # anybody else in the account, even with kms:* in IAM (AdministratorAccess): reading only
        (OUTSIDER, "kms:Decrypt", OWN, True, DENY),
        (OUTSIDER, "kms:ImportKeyMaterial", {}, True, DENY),
        (OUTSIDER, "kms:DescribeKey", {}, True, ALLOW),
        (OUTSIDER, "kms:DescribeKey", {}, False, IMPLICIT_DENY),
        (OUTSIDER, "kms:PutKeyPolicy", {}, True, DENY),
        (OUTSIDER, "kms:ScheduleKeyDeletion", {}, True, DENY),
        (OUTSIDER, "kms:DisableKey", {}, True, IMPLICIT_DENY),
        (ROOT, "kms:PutKeyPolicy", {}, True, DENY),
        # only the deployer changes the policy (lock-out safety) or deletes the key; it never uses it
        (DEPLOYER, "kms:PutKeyPolicy", {}, False, ALLOW),
        (DEPLOYER, "kms:ScheduleKeyDeletion", {}, False, ALLOW),
        (DEPLOYER, "kms:Decrypt", OWN, True, DENY),
        (DEPLOYER, "kms:ImportKeyMaterial", {}, True, DENY),
        # the auditor reads, nothing else
        (AUDITOR, "kms:DescribeKey", {}, False, ALLOW),
        (AUDITOR, "kms:GetKeyPolicy", {}, False, ALLOW),
        (AUDITOR, "kms:ListResourceTags", {}, False, ALLOW),
        (AUDITOR, "kms:Decrypt", OWN, True, DENY),
        (AUDITOR, "kms:DisableKey", {}, True, DENY),
        (AUDITOR, "kms:PutKeyPolicy", {}, True, DENY),
        (AUDITOR, "kms:GetParametersForImport", {}, True, DENY),
    ],
)
def test_key_policy_separation_of_duties(
    who: str, action: str, context: dict[str, str], iam: bool, decision: str
) -> None:
    assert evaluate(policy(), Request(who, action, context, iam_allows=iam)) == decision


def test_replica_copy_lets_replication_encrypt_not_decrypt() -> None:
    replica = documents.key_policy(
        account_id=ACCT,
        region="eu-central-1",
        data_class="appointments",
        copy="replica",
        admin_arn=ADMIN,
        app_arn=APP,
        ceremony_arn=CEREMONY,
        replication_role_arn=REPLICATION,
        bucket_arn="arn:aws:s3:::clefs-appointments-eu-central-1-abc1234",
        deployer_arn=DEPLOYER,
        auditor_arn=AUDITOR,
    )
    via = {
        "kms:ViaService": "s3.eu-central-1.amazonaws.com",
        "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::clefs-appointments-eu-central-1-abc1234/o",
    }
    assert evaluate(replica, Request(REPLICATION, "kms:Encrypt", via)) == ALLOW
    assert evaluate(replica, Request(REPLICATION, "kms:GenerateDataKey", via)) == ALLOW
    assert evaluate(replica, Request(REPLICATION, "kms:Decrypt", via)) == DENY


def test_key_policy_findings_is_empty_for_the_real_policy_and_names_each_breach() -> None:
    kwargs = dict(
        data_class="appointments",
        region="eu-west-3",
        copy="primary",
        account_id=ACCT,
        roles={"admin": ADMIN, "app": APP, "ceremony": CEREMONY, "auditor": AUDITOR, "deployer": DEPLOYER},
        replication_role=REPLICATION,
        bucket_arn_in_region=BUCKET,
    )
    assert key_policy_findings(policy(), **kwargs) == []
    broken = policy()
    broken["Statement"] = [
        s for s in broken["Statement"] if s["Sid"] != "AppOnlyEncryptsDecryptsGeneratesDataKeys"
    ]  # type: ignore[index]
    assert key_policy_findings(broken, **kwargs) == [
        "the app role can kms:DescribeKey even with an IAM policy granting kms:*",
    ]
    assert key_policy_findings(None, **kwargs) == ["has no parseable key policy"]


def test_the_account_root_no_longer_delegates_policy_changes_to_iam() -> None:
    """Issue 9: a principal with AdministratorAccess must not rewrite the policy to grant itself Decrypt."""
    kwargs = dict(
        data_class="appointments",
        region="eu-west-3",
        copy="primary",
        account_id=ACCT,
        roles={"admin": ADMIN, "app": APP, "ceremony": CEREMONY, "auditor": AUDITOR, "deployer": DEPLOYER},
        replication_role=REPLICATION,
        bucket_arn_in_region=BUCKET,
    )
    old_style = policy()
    for statement in old_style["Statement"]:  # type: ignore[union-attr]
        if statement["Sid"] == "AccountReadsThroughIamOnly":
            statement["Action"] = list(documents.ADMIN_ACTIONS)
    old_style["Statement"] = [  # type: ignore[index]
        s
        for s in old_style["Statement"]
        if s["Sid"] != "DenyPolicyChangesToAllButTheDeployer"  # type: ignore[union-attr]
    ]
    findings = key_policy_findings(old_style, **kwargs)
    assert (
        "the account's IAM principals can kms:PutKeyPolicy even with an IAM policy granting kms:*" in findings
    )
    assert (
        "other account principals can kms:ScheduleKeyDeletion even with an IAM policy granting kms:*"
        in findings
    )


def test_key_policy_rejects_unknown_copy() -> None:
    with pytest.raises(ValueError, match="copy must be"):
        documents.key_policy(
            account_id=ACCT,
            region="r",
            data_class="x",
            copy="backup",
            admin_arn=ADMIN,
            app_arn=APP,
            ceremony_arn=CEREMONY,
            replication_role_arn=REPLICATION,
            bucket_arn=BUCKET,
            deployer_arn=DEPLOYER,
            auditor_arn=AUDITOR,
        )


# -- bucket policies ------------------------------------------------------------------------------
NAME = "clefs-appointments-eu-west-3-abc1234"


def test_class_bucket_policy_denies_plain_http_old_tls_and_wrong_encryption() -> None:
    doc = documents.class_bucket_policy(f"arn:aws:s3:::{NAME}", KEY)
    assert tls_problems(doc, NAME) == []
    assert sse_kms_put_problems(doc, NAME, KEY) == []
    tls12 = {"aws:SecureTransport": "true", "s3:TlsVersion": "1.2"}
    sse = {
        "s3:x-amz-server-side-encryption": "aws:kms",
        "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY,
    }
    obj = f"arn:aws:s3:::{NAME}/doc"
    assert evaluate(doc, Request(APP, "s3:PutObject", {**tls12, **sse}, resource=obj)) == IMPLICIT_DENY
    assert evaluate(doc, Request(APP, "s3:GetObject", tls12, resource=obj)) == IMPLICIT_DENY


def test_transcript_policy_is_tls_only_and_the_checks_notice_a_missing_statement() -> None:
    doc = documents.transcript_bucket_policy(f"arn:aws:s3:::{NAME}")
    assert tls_problems(doc, NAME) == []
    assert "does not deny PutObject without SSE headers" in sse_kms_put_problems(doc, NAME, KEY)
    doc["Statement"] = doc["Statement"][:1]
    assert tls_problems(doc, NAME) == [
        "does not deny s3:GetObject over TLS 1.1 (s3:TlsVersion < 1.2)",
        "does not deny s3:ListBucket over TLS 1.1 (s3:TlsVersion < 1.2)",
        "does not deny s3:PutObject over TLS 1.1 (s3:TlsVersion < 1.2)",
    ]


def test_replication_role_policy_is_least_privilege() -> None:
    src, dst = "arn:aws:s3:::src", "arn:aws:s3:::dst"
    doc = documents.replication_role_policy(src, dst)
    grants = {(a, s["Resource"]) for s in doc["Statement"] for a in s["Action"]}
    assert grants == {
        ("s3:GetReplicationConfiguration", src),
        ("s3:ListBucket", src),
        ("s3:GetObjectVersionForReplication", f"{src}/*"),
        ("s3:GetObjectVersionAcl", f"{src}/*"),
        ("s3:GetObjectVersionTagging", f"{src}/*"),
        ("s3:ReplicateObject", f"{dst}/*"),
        ("s3:ReplicateDelete", f"{dst}/*"),
        ("s3:ReplicateTags", f"{dst}/*"),
    }
    assert {s["Effect"] for s in doc["Statement"]} == {"Allow"}

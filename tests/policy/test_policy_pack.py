"""The policy pack: silent on the real program, loud on each broken variant of it."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
)

from infra.mocks import Recording, run_program
from infra.model import data_classes
from infra.program import documents
from infra.program.stack import build
from policy import rules
from policy.offline import Violation, check, main, resource_args

REPO = Path(__file__).resolve().parents[2]
ALL_POLICIES = rules.policy_names(rules.all_policies())
ENC = "clefs-class-buckets-encrypted-with-class-key"


def test_the_real_program_passes_every_policy(recording: Recording) -> None:
    assert check(recording) == []


def test_policies_are_unique_mandatory_and_the_pack_is_built_only_in_its_entry_file() -> None:
    policies = rules.all_policies()
    assert len(ALL_POLICIES) == len(set(ALL_POLICIES)) == 15
    assert {p.enforcement_level for p in policies} == {EnforcementLevel.MANDATORY}
    tree = ast.parse((REPO / "policy" / "__main__.py").read_text())
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert calls.count("PolicyPack") == 1 and "all_policies" in calls
    modules = [p for p in (REPO / "policy").glob("*.py") if p.name != "__main__.py"]
    assert {"rules.py", "resource_rules.py", "stack_rules.py", "__init__.py"} <= {p.name for p in modules}
    for module in modules:
        assert "PolicyPack(" not in module.read_text()
    pack = yaml.safe_load((REPO / "policy" / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    assert (REPO / "policy" / pack["runtime"]["options"]["virtualenv"] / "bin" / "python").exists()


# -- variants: each breaks one invariant ------------------------------------------------------
def wrap(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, edit: Callable[[str, dict[str, Any]], bool]
) -> None:
    """Replace `module.name` by a constructor whose kwargs `edit` may change; False drops it."""
    original = getattr(module, name)

    def constructor(resource_name: str, *args: Any, **kwargs: Any) -> Any:
        if edit(resource_name, kwargs) is False:
            return None
        return original(resource_name, *args, **kwargs)

    monkeypatch.setattr(module, name, constructor)


def _set(**changes: Any) -> Callable[[str, dict[str, Any]], bool]:
    def edit(_name: str, kwargs: dict[str, Any]) -> bool:
        kwargs.update(changes)
        return True

    return edit


def _drop(_name: str, _kwargs: dict[str, Any]) -> bool:
    return False


def key_material(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.kms, "ExternalKey", _set(key_material_base64="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))


def replica_key_material(mp: pytest.MonkeyPatch) -> None:
    wrap(
        mp,
        aws.kms,
        "ReplicaExternalKey",
        _set(key_material_base64="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    )


def single_region_key(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.kms, "ExternalKey", _set(multi_region=False))


def partial_public_access_block(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.s3, "BucketPublicAccessBlock", _set(restrict_public_buckets=False))


def versioning_suspended(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.s3, "BucketVersioning", _set(versioning_configuration={"status": "Suspended"}))


def acls_enabled(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.s3, "BucketOwnershipControls", _set(rule={"object_ownership": "ObjectWriter"}))


def no_tls_statements(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(documents, "tls_only_statements", lambda bucket_arn: [])


def no_bucket_policy(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.s3, "BucketPolicy", _drop)


def no_sse_put_statements(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(documents, "sse_kms_put_statements", lambda bucket_arn, key_arn: [])


def sse_s3_instead_of_kms(mp: pytest.MonkeyPatch) -> None:
    wrap(
        mp,
        aws.s3,
        "BucketServerSideEncryptionConfiguration",
        _set(rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}]),
    )


def another_class_key(mp: pytest.MonkeyPatch) -> None:
    first: list[Any] = []

    def edit(_name: str, kwargs: dict[str, Any]) -> bool:
        default = kwargs["rules"][0]["apply_server_side_encryption_by_default"]
        if "kms_master_key_id" in default:
            first.append(default["kms_master_key_id"])
            default["kms_master_key_id"] = first[0]  # every class under health-documents' key
        return True

    wrap(mp, aws.s3, "BucketServerSideEncryptionConfiguration", edit)


def bucket_keys_off(mp: pytest.MonkeyPatch) -> None:
    def edit(_name: str, kwargs: dict[str, Any]) -> bool:
        kwargs["rules"][0]["bucket_key_enabled"] = False
        return True

    wrap(mp, aws.s3, "BucketServerSideEncryptionConfiguration", edit)


def no_replication(mp: pytest.MonkeyPatch) -> None:
    wrap(mp, aws.s3, "BucketReplicationConfig", _drop)


def replication_under_aws_managed_key(mp: pytest.MonkeyPatch) -> None:
    def edit(_name: str, kwargs: dict[str, Any]) -> bool:
        kwargs["rules"][0]["destination"]["encryption_configuration"]["replica_kms_key_id"] = "alias/aws/s3"
        return True

    wrap(mp, aws.s3, "BucketReplicationConfig", edit)


def no_client_side_flag(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(data_classes.DataClass, "client_side_encryption", property(lambda self: False))


def admins_can_decrypt(mp: pytest.MonkeyPatch) -> None:
    original = documents.key_policy

    def key_policy(**kwargs: Any) -> dict[str, Any]:
        doc = original(**kwargs)
        doc["Statement"] = [s for s in doc["Statement"] if s["Effect"] == "Allow"]
        admins = next(s for s in doc["Statement"] if s["Sid"] == "KeyAdministrators")
        admins["Action"] = [*admins["Action"], "kms:Decrypt"]
        return doc

    mp.setattr(documents, "key_policy", key_policy)


def root_delegates_policy_changes(mp: pytest.MonkeyPatch) -> None:
    """The old root statement: administration delegated to IAM, PutKeyPolicy included (issue 9)."""
    original = documents.key_policy

    def key_policy(**kwargs: Any) -> dict[str, Any]:
        doc = original(**kwargs)
        doc["Statement"] = [s for s in doc["Statement"] if s["Sid"] != "DenyPolicyChangesToAllButTheDeployer"]
        root = next(s for s in doc["Statement"] if s["Sid"] == "AccountReadsThroughIamOnly")
        root["Action"] = list(documents.ADMIN_ACTIONS)
        return doc

    mp.setattr(documents, "key_policy", key_policy)


def auditor_can_disable(mp: pytest.MonkeyPatch) -> None:
    original = documents.key_policy

    def key_policy(**kwargs: Any) -> dict[str, Any]:
        doc = original(**kwargs)
        doc["Statement"] = [s for s in doc["Statement"] if s["Sid"] != "AuditorOnlyReads"]
        auditor = next(s for s in doc["Statement"] if s["Sid"] == "AuditorReadsTheKey")
        auditor["Action"] = [*auditor["Action"], "kms:DisableKey"]
        return doc

    mp.setattr(documents, "key_policy", key_policy)


def stray_default_provider_bucket() -> dict[str, Any]:
    outputs = build()
    aws.s3.Bucket("stray")
    return outputs


def rogue_region() -> dict[str, Any]:
    outputs = build()
    rogue = aws.Provider("rogue", region="us-east-1")
    aws.kms.ExternalKey("rogue-key", multi_region=True, opts=pulumi.ResourceOptions(provider=rogue))
    return outputs


Variant = tuple[
    Callable[[pytest.MonkeyPatch], None] | None, Callable[[], dict[str, Any]] | None, dict[str, Any]
]
CASES: list[tuple[str, Variant, dict[str, str]]] = [
    ("key material", (key_material, None, {}), {"clefs-kms-no-key-material": "keyMaterialBase64 is set"}),
    (
        "replica key material",
        (replica_key_material, None, {}),
        {"clefs-kms-no-key-material": "health-documents-eu-central-1: keyMaterialBase64 is set"},
    ),
    (
        "single-region key",
        (single_region_key, None, {}),
        {"clefs-kms-class-key-multi-region": "must be multi-region"},
    ),
    (
        "partial public access block",
        (partial_public_access_block, None, {}),
        {
            "clefs-s3-public-access-block": "must set restrictPublicBuckets to true",
            "clefs-buckets-public-access-blocked": "leaves restrictPublicBuckets off",
        },
    ),
    (
        "versioning suspended",
        (versioning_suspended, None, {}),
        {
            "clefs-s3-versioning": "versioning status is 'Suspended'",
            "clefs-buckets-versioned": r"versioning must be Enabled, found \['Suspended'\]",
        },
    ),
    (
        "ACLs enabled",
        (acls_enabled, None, {}),
        {"clefs-s3-ownership-enforced": "must be BucketOwnerEnforced"},
    ),
    (
        "no TLS statements",
        (no_tls_statements, None, {}),
        {
            "clefs-s3-bucket-policy-tls-only": r"does not deny s3:GetObject without TLS \(aws:Secure",
            "clefs-buckets-tls-only": "does not deny s3:PutObject over TLS 1.1",
        },
    ),
    (
        "no bucket policy",
        (no_bucket_policy, None, {}),
        {
            "clefs-buckets-tls-only": "expected one bucket policy, found 0",
            ENC: "has no parseable bucket policy",
        },
    ),
    (
        "no SSE-KMS put statements",
        (no_sse_put_statements, None, {}),
        {
            ENC: "does not deny PutObject with SSE-KMS under another key",
        },
    ),
    (
        "SSE-S3 instead of KMS",
        (sse_s3_instead_of_kms, None, {}),
        {
            ENC: "default encryption must be aws:kms under its class key",
        },
    ),
    (
        "another class's key",
        (another_class_key, None, {}),
        {
            ENC: r"bucket clefs-unit-appointments-eu-west-3-\w+ \(eu-west-3\): "
            "default encryption must be aws:kms",
        },
    ),
    (
        "bucket keys off",
        (bucket_keys_off, None, {}),
        {ENC: "S3 bucket keys must be enabled"},
    ),
    (
        "no replication",
        (no_replication, None, {}),
        {"clefs-class-buckets-replicated": "expected one replication configuration, found 0"},
    ),
    (
        "replication under aws/s3",
        (replication_under_aws_managed_key, None, {}),
        {"clefs-class-buckets-replicated": "no enabled whole-bucket rule replicates SSE-KMS objects"},
    ),
    (
        "no client-side flag",
        (no_client_side_flag, None, {}),
        {
            "clefs-end-to-end-client-side-flag": "data class health-documents: end-to-end class without",
        },
    ),
    (
        "admins can decrypt",
        (admins_can_decrypt, None, {}),
        {"clefs-kms-separation-of-duties": "key administrators can kms:Decrypt"},
    ),
    (
        "IAM may change the key policy",
        (root_delegates_policy_changes, None, {}),
        {
            "clefs-kms-separation-of-duties": "the account's IAM principals can kms:PutKeyPolicy even with "
            "an IAM policy granting kms:*",
        },
    ),
    (
        "the auditor can disable a key",
        (auditor_can_disable, None, {}),
        {"clefs-kms-separation-of-duties": "the auditor can kms:DisableKey"},
    ),
    (
        "stray bucket on the default provider",
        (None, stray_default_provider_bucket, {}),
        {
            "clefs-explicit-regional-provider": "stray: uses the default aws provider",
            "clefs-regions-within-config": "Bucket stray: uses the default aws provider",
            ENC: "belongs to no data class",
            "clefs-buckets-tls-only": "stray-",
            "clefs-buckets-public-access-blocked": "has no public access block",
            "clefs-buckets-versioned": "found none",
        },
    ),
    (
        "resource in a region outside config",
        (None, rogue_region, {}),
        {
            "clefs-explicit-regional-provider": "region 'us-east-1' is outside the allowed regions",
            "clefs-regions-within-config": "ExternalKey rogue-key: region us-east-1 is outside",
        },
    ),
    (
        "configured region outside the allowed ones",
        (None, None, {"primaryRegion": "us-east-1"}),
        {
            "clefs-regions-within-config": "configured region us-east-1 is outside the allowed regions",
            "clefs-explicit-regional-provider": "aws provider region 'us-east-1' is outside",
        },
    ),
]


def _messages(violations: list[Violation], policy: str) -> list[str]:
    return [v.message for v in violations if v.policy == policy]


@pytest.mark.parametrize(("variant", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_broken_variant_makes_its_rule_fire(
    monkeypatch: pytest.MonkeyPatch, variant: Variant, expected: dict[str, str]
) -> None:
    patch, program, config = variant
    if patch is not None:
        patch(monkeypatch)
    violations = check(run_program(config, program=program))
    for policy, fragment in expected.items():
        messages = _messages(violations, policy)
        assert any(re.search(fragment, m) for m in messages), (
            f"{policy} did not report {fragment!r}: {messages}"
        )
    unexpected = {v.policy for v in violations} - set(expected)
    assert not unexpected, f"unrelated policies fired: {unexpected}"


def test_every_policy_is_made_to_fire_by_some_variant() -> None:
    fired = {policy for _, _, expected in CASES for policy in expected}
    assert fired == set(ALL_POLICIES)


# -- validators called directly with hand-built args ---------------------------------------------
def _args(
    resource_type: str,
    props: dict[str, Any],
    provider_region: str | None = "eu-west-3",
    provider_name: str = "clefs-primary",
    config: dict[str, Any] | None = None,
) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    provider = None
    if provider_region is not None:
        provider = PolicyProviderResource(
            "pulumi:providers:aws", {"region": provider_region}, f"urn:{provider_name}", provider_name
        )
    return ResourceValidationArgs(
        resource_type, props, f"urn:{resource_type}::x", "x", opts, provider, config or {}
    )


@pytest.mark.parametrize(
    ("validator", "args", "fragment"),
    [
        (
            rules.validate_no_key_material,
            _args(rules.REPLICA_EXTERNAL_KEY, {"keyMaterialBase64": "AAAA"}),
            "keyMaterialBase64 is set",
        ),
        (rules.validate_no_key_material, _args(rules.EXTERNAL_KEY, {"multiRegion": True}), None),
        (
            rules.validate_explicit_regional_provider,
            _args(rules.BUCKET, {}, provider_region=None),
            "uses the default aws provider",
        ),
        (
            rules.validate_explicit_regional_provider,
            _args(rules.BUCKET, {}, provider_name="default_7_51_1"),
            "uses the default aws provider",
        ),
        (
            rules.validate_explicit_regional_provider,
            _args(rules.BUCKET, {"region": "us-west-2"}),
            "region 'us-west-2' is outside",
        ),
        (
            rules.validate_explicit_regional_provider,
            _args(rules.BUCKET, {}, provider_region="eu-west-1", config={"allowedRegions": ["eu-west-1"]}),
            None,
        ),
        (
            rules.validate_explicit_regional_provider,
            _args(rules.PROVIDER, {"region": "ap-south-1"}, provider_region=None),
            "aws provider region 'ap-south-1'",
        ),
        (
            rules.validate_public_access_block,
            _args(rules.PUBLIC_ACCESS, {f: True for f in rules.PUBLIC_ACCESS_FLAGS}),
            None,
        ),
        (
            rules.validate_public_access_block,
            _args(rules.PUBLIC_ACCESS, {"blockPublicAcls": True}),
            "blockPublicPolicy, ignorePublicAcls, restrictPublicBuckets",
        ),
        (rules.validate_versioning, _args(rules.VERSIONING, {}), "versioning status is None"),
        (
            rules.validate_bucket_policy_tls,
            _args(rules.BUCKET_POLICY, {"bucket": "b", "policy": "not json"}),
            "has no parseable bucket policy",
        ),
    ],
)
def test_resource_validators_on_hand_built_args(
    validator: Callable[..., None], args: ResourceValidationArgs, fragment: str | None
) -> None:
    reported: list[str] = []
    validator(args, lambda message, urn=None: reported.append(message))
    if fragment is None:
        assert reported == []
    else:
        assert any(fragment in m for m in reported), reported


def test_resource_args_carry_inputs_and_the_explicit_provider(recording: Recording) -> None:
    key = recording.one(rules.EXTERNAL_KEY, **{"clefs:data-class": "appointments"})
    args = resource_args(recording, key)
    assert args.props["multiRegion"] is True
    assert args.provider is not None and args.provider.props["region"] == "eu-west-3"


def test_offline_main_reports_and_exits_non_zero_on_violations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out.strip().endswith(": 0 violation(s)")
    versioning_suspended(monkeypatch)
    assert main([str(REPO / "Pulumi.localstack.yaml")]) == 1
    out = capsys.readouterr().out
    assert "[clefs-s3-versioning]" in out and "[clefs-buckets-versioned]" in out

"""The program's whole resource graph, recorded under Pulumi mocks, against the issue's invariants."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from infra.mocks import (
    CALLER_IDENTITY_INVOKE,
    MOCK_ACCOUNT_ID,
    PROVIDER_TYPE,
    RecordedResource,
    Recording,
    RecordingMocks,
    UnmockedInvokeError,
    is_secret,
    reveal,
    run_program,
)
from infra.model.data_classes import DEFAULT_DATA_CLASSES
from infra.model.settings import ConfigError, settings_from_mapping
from infra.program import documents
from infra.program.stack import build

REPO = Path(__file__).resolve().parents[2]
PRIMARY, REPLICA = "eu-west-3", "eu-central-1"
CLASSES = [dc.name for dc in DEFAULT_DATA_CLASSES]
BUCKET = "aws:s3/bucket:Bucket"
EXTERNAL_KEY = "aws:kms/externalKey:ExternalKey"
REPLICA_KEY = "aws:kms/replicaExternalKey:ReplicaExternalKey"
MRK_ARN = re.compile(r"^arn:aws:kms:(eu-west-3|eu-central-1):000000000000:key/mrk-[0-9a-f]{32}$")
ROLE_ARN = re.compile(r"^arn:aws:iam::000000000000:role/[\w+=,.@-]{1,64}$")
COMPONENTS = {
    "clefs:infra:RegionalProviders": 1,
    "clefs:infra:Roles": 1,
    "clefs:infra:DataClass": 3,
    "clefs:infra:ClassStorage": 3,
    "clefs:infra:ClassKey": 3,
    "clefs:infra:ClassProtection": 3,
    "clefs:infra:TranscriptBucket": 1,
    "clefs:infra:KeyAlarms": 1,
}


def default_provider_users(rec: Recording) -> list[str]:
    return [f"{r.type}::{r.name}" for r in rec.custom_aws() if not r.provider]


def attached(rec: Recording, token: str, bucket: RecordedResource) -> list[RecordedResource]:
    return [r for r in rec.of_type(token) if r.inputs.get("bucket") == bucket.outputs["bucket"]]


def class_bucket(rec: Recording, data_class: str, copy: str) -> RecordedResource:
    return rec.one(BUCKET, **{"clefs:data-class": data_class, "clefs:copy": copy})


def class_key(rec: Recording, data_class: str, token: str) -> RecordedResource:
    return rec.one(token, **{"clefs:data-class": data_class})


# -- providers, components, invokes ----------------------------------------------------------
def test_one_explicit_provider_per_configured_region(recording: Recording) -> None:
    providers = recording.of_type(PROVIDER_TYPE)
    assert sorted(p.inputs["region"] for p in providers) == sorted([PRIMARY, REPLICA])
    assert {r.region for r in recording.custom_aws() if r.region} == {PRIMARY, REPLICA}


def test_nothing_uses_the_default_provider(recording: Recording) -> None:
    assert default_provider_users(recording) == []
    assert all(
        r.provider_urn in {p.urn for p in recording.of_type(PROVIDER_TYPE)} for r in recording.custom_aws()
    )


def test_the_default_provider_check_does_catch_a_stray_resource() -> None:
    def variant() -> dict[str, Any]:
        outputs = build()
        aws.s3.Bucket("stray")
        return outputs

    assert default_provider_users(run_program(program=variant)) == ["aws:s3/bucket:Bucket::stray"]


def test_components_are_the_documented_ones_and_all_register_outputs(recording: Recording) -> None:
    counts = Counter(r.type for r in recording.components())
    assert dict(counts) == COMPONENTS
    for component in recording.components():
        assert component.component_outputs, f"{component.type} {component.name} has no outputs"
    for r in recording.custom_aws():
        assert any(a.type.startswith("clefs:infra:") for a in recording.ancestors(r)), r.urn


def test_the_only_invoke_is_caller_identity_through_the_primary_provider(recording: Recording) -> None:
    primary = next(p for p in recording.of_type(PROVIDER_TYPE) if p.inputs["region"] == PRIMARY)
    assert [(token, ref.rsplit("::", 1)[0]) for token, ref in recording.calls] == [
        (CALLER_IDENTITY_INVOKE, primary.urn)
    ]


def test_unmocked_invokes_raise() -> None:
    def variant() -> dict[str, Any]:
        outputs = build()
        outputs["region"] = aws.get_region_output().region
        return outputs

    with pytest.raises(UnmockedInvokeError, match="unmocked invoke aws:index/getRegion:getRegion"):
        run_program(program=variant)


def test_invalid_config_stops_the_program_with_its_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"clefs:dataClasses\[0\]\.name: 'X' is invalid"):
        run_program({"dataClasses": [{"name": "X"}]})


# -- keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("data_class", CLASSES)
def test_class_key_pair_is_multi_region_external_without_material(
    recording: Recording, data_class: str
) -> None:
    primary = class_key(recording, data_class, EXTERNAL_KEY)
    replica = class_key(recording, data_class, REPLICA_KEY)
    assert (primary.region, replica.region) == (PRIMARY, REPLICA)
    assert primary.inputs["multiRegion"] is True
    assert primary.inputs["keyUsage"] == "ENCRYPT_DECRYPT"
    assert replica.inputs["primaryKeyArn"] == primary.outputs["arn"]
    for key in (primary, replica):
        assert "keyMaterialBase64" not in key.inputs
        assert "validTo" not in key.inputs and "enabled" not in key.inputs
        assert key.inputs["bypassPolicyLockoutSafetyCheck"] is False
        assert MRK_ARN.match(key.outputs["arn"]), key.outputs["arn"]
    assert primary.outputs["arn"].split("/")[-1] == replica.outputs["arn"].split("/")[-1]


@pytest.mark.parametrize("data_class", CLASSES)
def test_aliases_in_both_regions_target_the_regional_copy(recording: Recording, data_class: str) -> None:
    keys = {
        k.region: k.outputs["arn"]
        for k in (class_key(recording, data_class, t) for t in (EXTERNAL_KEY, REPLICA_KEY))
    }
    aliases = [
        a
        for a in recording.of_type("aws:kms/alias:Alias")
        if a.inputs["name"] == f"alias/clefs/unit/{data_class}"
    ]
    assert {a.region: a.inputs["targetKeyId"] for a in aliases} == keys


@pytest.mark.parametrize("data_class", CLASSES)
def test_key_policies_are_built_from_the_real_role_and_bucket_arns(
    recording: Recording, data_class: str
) -> None:
    roles = recording.component("clefs:infra:Roles", "clefs").component_outputs or {}
    storage = recording.component("clefs:infra:ClassStorage", data_class).component_outputs or {}
    for token, copy in ((EXTERNAL_KEY, "primary"), (REPLICA_KEY, "replica")):
        key = class_key(recording, data_class, token)
        expected = documents.key_policy(
            account_id=MOCK_ACCOUNT_ID,
            region=str(key.region),
            data_class=data_class,
            copy=copy,
            admin_arn=roles["admin"],
            app_arn=roles["app"],
            ceremony_arn=roles["ceremony"],
            replication_role_arn=storage["replication_role"],
            bucket_arn=storage["bucket_arns"][key.region],
            deployer_arn=roles["deployer"],
            auditor_arn=roles["auditor"],
        )
        assert json.loads(key.inputs["policy"]) == expected
        assert all(ROLE_ARN.match(roles[r]) for r in ("admin", "app", "ceremony", "auditor"))
        # the deployer is the role of the session running the program, not the session itself
        assert roles["deployer"] == f"arn:aws:iam::{MOCK_ACCOUNT_ID}:role/clefs-deployer"


# -- storage ------------------------------------------------------------------------------------
@pytest.mark.parametrize("data_class", CLASSES)
@pytest.mark.parametrize(
    ("copy", "region", "key_token"), [("primary", PRIMARY, EXTERNAL_KEY), ("replica", REPLICA, REPLICA_KEY)]
)
def test_class_bucket_is_protected(
    recording: Recording, data_class: str, copy: str, region: str, key_token: str
) -> None:
    bucket = class_bucket(recording, data_class, copy)
    key_arn = class_key(recording, data_class, key_token).outputs["arn"]
    assert bucket.region == region
    assert bucket.outputs["bucket"].startswith(f"clefs-unit-{data_class}-{region}-")

    (sse,) = attached(
        recording,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        bucket,
    )
    assert sse.inputs["rules"] == [
        {
            "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn},
            "bucketKeyEnabled": True,
        }
    ]
    (versioning,) = attached(recording, "aws:s3/bucketVersioning:BucketVersioning", bucket)
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    (pab,) = attached(recording, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", bucket)
    assert {
        k: pab.inputs[k]
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    } == dict.fromkeys(
        ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True
    )
    (ownership,) = attached(recording, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", bucket)
    assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    (policy,) = attached(recording, "aws:s3/bucketPolicy:BucketPolicy", bucket)
    assert json.loads(policy.inputs["policy"]) == documents.class_bucket_policy(
        bucket.outputs["arn"], key_arn
    )
    assert pab.urn in policy.dependencies
    for sub in (sse, versioning, pab, ownership, policy):
        assert sub.provider == bucket.provider and sub.region == region


@pytest.mark.parametrize("data_class", CLASSES)
def test_replication_primary_to_replica_under_the_replica_key(recording: Recording, data_class: str) -> None:
    source, replica = (
        class_bucket(recording, data_class, "primary"),
        class_bucket(recording, data_class, "replica"),
    )
    replica_key = class_key(recording, data_class, REPLICA_KEY).outputs["arn"]
    (config,) = attached(recording, "aws:s3/bucketReplicationConfig:BucketReplicationConfig", source)
    assert config.region == PRIMARY
    (rule,) = config.inputs["rules"]
    assert rule["status"] == "Enabled" and rule["filter"] == {}
    assert rule["destination"] == {
        "bucket": replica.outputs["arn"],
        "encryptionConfiguration": {"replicaKmsKeyId": replica_key},
    }
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
    role = recording.one("aws:iam/role:Role", **{"clefs:data-class": data_class})
    assert config.inputs["role"] == role.outputs["arn"]
    versionings = {
        v.urn
        for b in (source, replica)
        for v in attached(recording, "aws:s3/bucketVersioning:BucketVersioning", b)
    }
    assert versionings <= set(config.dependencies)
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [
        documents.replication_trust_policy(MOCK_ACCOUNT_ID, source.outputs["arn"])["Statement"][0]
    ]
    (role_policy,) = [
        p for p in recording.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id
    ]
    assert json.loads(role_policy.inputs["policy"]) == documents.replication_role_policy(
        source.outputs["arn"], replica.outputs["arn"]
    )


def test_transcript_bucket_is_worm_in_compliance_mode_for_the_configured_days() -> None:
    rec = run_program({"transcriptRetentionDays": "42"})
    bucket = rec.one(BUCKET, **{"clefs:purpose": "ceremony-transcripts"})
    assert bucket.region == PRIMARY and bucket.inputs["objectLockEnabled"] is True
    (lock,) = attached(rec, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", bucket)
    assert lock.inputs["rule"] == {"defaultRetention": {"mode": "COMPLIANCE", "days": 42}}
    (versioning,) = attached(rec, "aws:s3/bucketVersioning:BucketVersioning", bucket)
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}
    assert versioning.urn in lock.dependencies
    (policy,) = attached(rec, "aws:s3/bucketPolicy:BucketPolicy", bucket)
    assert json.loads(policy.inputs["policy"]) == documents.transcript_bucket_policy(bucket.outputs["arn"])
    (sse,) = attached(
        rec, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", bucket
    )
    assert sse.inputs["rules"] == [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]
    assert rec.outputs["transcript_bucket"] == bucket.outputs["bucket"]


# -- roles ----------------------------------------------------------------------------------------
def _trust(rec: Recording, role: str) -> dict[str, Any]:
    return json.loads(rec.one("aws:iam/role:Role", **{"clefs:role": role}).inputs["assumeRolePolicy"])


def test_roles_trust_the_account_with_mfa_for_humans(recording: Recording) -> None:
    root = f"arn:aws:iam::{MOCK_ACCOUNT_ID}:root"
    for role, mfa in (("admin", True), ("ceremony", True), ("app", False)):
        (statement,) = _trust(recording, role)["Statement"]
        assert statement["Principal"] == {"AWS": [root]}
        assert ("Condition" in statement) is mfa


def test_trusted_principals_come_from_config() -> None:
    ops = "arn:aws:iam::123456789012:role/ops"
    rec = run_program({"trustedPrincipals": {"admin": [ops]}})
    assert _trust(rec, "admin")["Statement"][0]["Principal"] == {"AWS": [ops]}
    assert _trust(rec, "app")["Statement"][0]["Principal"] == {
        "AWS": [f"arn:aws:iam::{MOCK_ACCOUNT_ID}:root"]
    }


# -- outputs ------------------------------------------------------------------------------------
def test_outputs_contract(recording: Recording) -> None:
    out = recording.outputs
    flat = {
        f"{c}/{r}/{k}" for c in CLASSES for r in (PRIMARY, REPLICA) for k in ("key_arn", "alias", "bucket")
    }
    assert (
        set(out)
        == {
            "schema",
            "primary_region",
            "replica_region",
            "account_id",
            "stack",
            "namespace",
            "classes",
            "transcript_bucket",
            "alarm_topics",
            "roles",
        }
        | flat
    )
    assert (out["primary_region"], out["replica_region"], out["account_id"]) == (
        PRIMARY,
        REPLICA,
        MOCK_ACCOUNT_ID,
    )
    assert out["schema"] == "clefs.stack-outputs/v1"  # docs/stack-outputs.md
    assert list(out["classes"]) == CLASSES
    roles = recording.component("clefs:infra:Roles", "clefs").component_outputs
    assert {k: out["roles"][k] for k in ("admin", "app", "ceremony", "auditor", "deployer")} == roles
    assert (out["stack"], out["namespace"]) == ("unit", "clefs-unit")
    for dc in DEFAULT_DATA_CLASSES:
        entry = out["classes"][dc.name]
        assert entry["end_to_end"] is dc.end_to_end
        assert entry["client_side_encryption"] is dc.end_to_end
        assert entry["protection"] == list(dc.protection)
        assert entry["encryption_context"] == {"data_class": dc.name}
        assert entry["replication_role"] == out["roles"]["replication"][dc.name]
        for copy, region, token in (("primary", PRIMARY, EXTERNAL_KEY), ("replica", REPLICA, REPLICA_KEY)):
            key, bucket = class_key(recording, dc.name, token), class_bucket(recording, dc.name, copy)
            assert entry["regions"][region] == {
                "key_arn": key.outputs["arn"],
                "key_id": key.outputs["arn"].rsplit("/", 1)[-1],
                "alias": f"alias/clefs/unit/{dc.name}",
                "bucket": bucket.outputs["bucket"],
                "bucket_arn": bucket.outputs["arn"],
            }
            assert out[f"{dc.name}/{region}/key_arn"] == key.outputs["arn"]
            assert out[f"{dc.name}/{region}/alias"] == f"alias/clefs/unit/{dc.name}"
            assert out[f"{dc.name}/{region}/bucket"] == bucket.outputs["bucket"]


# -- config changes -----------------------------------------------------------------------------
def test_adding_a_class_adds_exactly_one_class_worth_of_resources(recording: Recording) -> None:
    classes = [{"name": n} for n in CLASSES]
    two = run_program({"dataClasses": classes[:2]})
    four = run_program(
        {
            "dataClasses": [
                *classes,
                {"name": "prescriptions", "protection": ["at-rest", "in-transit", "end-to-end"]},
            ]
        }
    )
    per_class = len(recording.resources) - len(two.resources)
    assert per_class == len(four.resources) - len(recording.resources) == 23
    assert four.outputs["classes"]["prescriptions"]["client_side_encryption"] is True


def test_regions_come_from_config() -> None:
    rec = run_program({"primaryRegion": "eu-west-1", "replicaRegion": "eu-north-1"})
    assert sorted(p.inputs["region"] for p in rec.of_type(PROVIDER_TYPE)) == ["eu-north-1", "eu-west-1"]
    assert {r.region for r in rec.custom_aws() if r.region} == {"eu-west-1", "eu-north-1"}
    assert set(rec.outputs["classes"]["appointments"]["regions"]) == {"eu-west-1", "eu-north-1"}


def test_localstack_providers_point_every_service_at_the_endpoint() -> None:
    rec = run_program({"endpoint": "http://127.0.0.1:4566"})
    for provider in rec.of_type(PROVIDER_TYPE):
        inputs = provider.inputs
        assert json.loads(inputs["endpoints"]) == [
            dict.fromkeys(("iam", "kms", "s3", "sts"), "http://127.0.0.1:4566")
        ]
        assert (inputs["s3UsePathStyle"], inputs["skipCredentialsValidation"]) == ("true", "true")
        assert (inputs["skipRequestingAccountId"], inputs["skipMetadataApiCheck"]) == ("true", "true")
        for credential in ("accessKey", "secretKey"):  # LocalStack's public dummy, still kept secret
            assert is_secret(inputs[credential]) and reveal(inputs[credential]) == "test"


def test_real_aws_providers_carry_no_credentials_or_endpoints(recording: Recording) -> None:
    for provider in recording.of_type(PROVIDER_TYPE):
        assert not {"endpoints", "accessKey", "secretKey", "token", "s3UsePathStyle"} & set(provider.inputs)


def _stack_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text())


def test_project_file() -> None:
    project = _stack_file("Pulumi.yaml")
    assert project["name"] == "clefs"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}


@pytest.mark.parametrize("stack_file", ["Pulumi.localstack.yaml", "Pulumi.aws-example.yaml"])
def test_stack_files_are_valid_and_hold_no_secrets(stack_file: str) -> None:
    config = _stack_file(stack_file)["config"]
    settings_from_mapping(config)
    text = (REPO / stack_file).read_text()
    assert "secure:" not in text and "accessKey" not in text and "secretKey" not in text
    assert not any(k.startswith("aws:") for k in config), "explicit providers ignore aws:* stack config"
    rec = run_program(config)
    if stack_file == "Pulumi.aws-example.yaml":
        for provider in rec.of_type(PROVIDER_TYPE):
            assert json.loads(provider.inputs["allowedAccountIds"]) == ["123456789012"]
            assert "endpoints" not in provider.inputs
    else:
        assert all("endpoints" in p.inputs for p in rec.of_type(PROVIDER_TYPE))


# -- the idiomatic Pulumi unit-test form --------------------------------------------------------
def test_under_pulumi_runtime_test_outputs_resolve_to_real_looking_values() -> None:
    from pulumi.runtime import settings as runtime_settings

    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config({})
    pulumi.runtime.set_mocks(RecordingMocks(), project="clefs", stack="unit", preview=False)

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        outputs = build(settings_from_mapping({}, stack="unit"))
        health = outputs["classes"]["health-documents"]["regions"][PRIMARY]

        def verify(values: list[str]) -> None:
            key_arn, bucket = values
            assert MRK_ARN.match(key_arn), key_arn
            assert bucket.startswith("clefs-unit-health-documents-eu-west-3-")

        return pulumi.Output.all(health["key_arn"], health["bucket"]).apply(verify)

    check()

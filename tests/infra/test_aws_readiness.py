"""Issue 9 on the program itself: drift-free keys, namespaced stacks, the deployer and the auditor."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.mocks import Recording, run_program
from infra.program.keys import IMPORT_OWNED
from infra.program.stack import build

EXTERNAL_KEY = "aws:kms/externalKey:ExternalKey"
REPLICA_KEY = "aws:kms/replicaExternalKey:ReplicaExternalKey"


def with_options(seen: dict[str, Any]) -> Any:
    """The program, with a stack transformation that records every resource's options."""

    def program() -> Any:
        def record(args: pulumi.ResourceTransformationArgs) -> None:
            seen[f"{args.type_}::{args.name}"] = args.opts
            return None

        pulumi.runtime.register_stack_transformation(record)
        return build()

    return program


def test_the_attributes_the_hsm_import_owns_are_ignored_by_pulumi() -> None:
    """After an import with expiry, a refresh must not make the next `up` clear validTo and
    re-import empty material (which the key policy refuses): the keys ignore what the import owns."""
    seen: dict[str, Any] = {}
    run_program(program=with_options(seen))
    keys = {name: opts for name, opts in seen.items() if name.split("::")[0] in (EXTERNAL_KEY, REPLICA_KEY)}
    assert len(keys) == 6, sorted(seen)
    for name, opts in keys.items():
        assert set(opts.ignore_changes or []) >= {"validTo", "keyMaterialBase64", "enabled"}, name
        assert tuple(opts.ignore_changes) == IMPORT_OWNED
    others = [o for n, o in seen.items() if n.split("::")[0] not in (EXTERNAL_KEY, REPLICA_KEY)]
    assert all(not (o.ignore_changes or []) for o in others), "nothing else ignores drift"


def names(recording: Recording) -> tuple[set[str], set[str]]:
    aliases = {str(a.inputs["name"]) for a in recording.of_type("aws:kms/alias:Alias")}
    buckets = {str(b.outputs["bucket"]) for b in recording.of_type("aws:s3/bucket:Bucket")}
    return aliases, buckets


def test_two_stacks_in_one_account_and_region_share_no_alias_or_bucket_name() -> None:
    first, second = run_program(stack="alpha"), run_program(stack="beta")
    (aliases_a, buckets_a), (aliases_b, buckets_b) = names(first), names(second)
    assert aliases_a.isdisjoint(aliases_b) and buckets_a.isdisjoint(buckets_b)
    assert all(a.startswith("alias/clefs/alpha/") for a in aliases_a)
    assert all(b.startswith("clefs-alpha-") for b in buckets_a)
    prefixed = run_program({"clefs:namePrefix": "acme"}, stack="alpha")
    assert all(a.startswith("alias/acme/alpha/") for a in names(prefixed)[0])


def test_a_configured_deployer_is_the_only_one_that_may_change_key_policies() -> None:
    deployer = "arn:aws:iam::123456789012:role/platform-deployer"
    recording = run_program({"clefs:deployerArn": deployer})
    roles = recording.component("clefs:infra:Roles", "clefs").component_outputs or {}
    assert roles["deployer"] == deployer
    import json

    for key in recording.of_type(EXTERNAL_KEY) + recording.of_type(REPLICA_KEY):
        statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
        assert statements["DeployerManagesTheKeyAndItsPolicy"]["Principal"] == {"AWS": deployer}
        deny = statements["DenyPolicyChangesToAllButTheDeployer"]
        assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": deployer}}
        root = statements["AccountReadsThroughIamOnly"]
        assert not {"kms:PutKeyPolicy", "kms:Put*", "kms:ScheduleKeyDeletion", "kms:*"} & set(root["Action"])


def test_the_auditor_role_reads_and_cannot_decrypt() -> None:
    recording = run_program()
    import json

    policies = [p for p in recording.of_type("aws:iam/rolePolicy:RolePolicy") if "auditor" in p.name]
    assert len(policies) == 1
    actions = {a for s in json.loads(policies[0].inputs["policy"])["Statement"] for a in s["Action"]}
    assert "kms:DescribeKey" in actions and "s3:ListBucketVersions" in actions
    assert not {
        a
        for a in actions
        if a.startswith("kms:") and not a.startswith(("kms:Describe", "kms:Get", "kms:List"))
    }


def test_alarms_watch_policy_changes_material_deletion_and_expiry_in_both_regions() -> None:
    import json

    from infra.program.alarms import EXPIRATION_DETAIL_TYPE, KMS_API_EVENTS

    recording = run_program()
    topics = recording.of_type("aws:sns/topic:Topic")
    rules = recording.of_type("aws:cloudwatch/eventRule:EventRule")
    targets = recording.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert {t.region for t in topics} == {"eu-west-3", "eu-central-1"}
    assert len(rules) == len(targets) == 4
    patterns = [json.loads(r.inputs["eventPattern"]) for r in rules]
    api = [p for p in patterns if p.get("detail-type") == ["AWS API Call via CloudTrail"]]
    assert len(api) == 2 and all(set(p["detail"]["eventName"]) == set(KMS_API_EVENTS) for p in api)
    assert {"PutKeyPolicy", "DeleteImportedKeyMaterial", "ScheduleKeyDeletion", "DisableKey"} <= set(
        KMS_API_EVENTS
    )
    assert sum(p.get("detail-type") == [EXPIRATION_DETAIL_TYPE] for p in patterns) == 2
    topic_arns = {t.outputs["arn"] for t in topics}
    assert {t.inputs["arn"] for t in targets} == topic_arns
    for policy in recording.of_type("aws:sns/topicPolicy:TopicPolicy"):
        statement = json.loads(policy.inputs["policy"])["Statement"][0]
        assert statement["Principal"] == {"Service": "events.amazonaws.com"}
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "000000000000"
    assert set(recording.outputs["alarm_topics"].values()) == topic_arns

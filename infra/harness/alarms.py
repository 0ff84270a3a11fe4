"""The key alarms' resources in LocalStack (infra/program/alarms.py): SNS topics and their
policies, EventBridge rules and targets. Each put is idempotent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.harness.common import Harness, HarnessError, Kind, aws_tags, policy_text


def create_topic(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    topic = str(inputs.get("name") or f"{name}-{m.suffix}")[:256]
    arn = m.client_for("sns", region).create_topic(Name=topic, Tags=aws_tags(inputs.get("tags"), kms=False))[
        "TopicArn"
    ]
    m.mark_fresh(arn)
    return arn, {"name": topic, "arn": arn}


def topic_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    m.client_for("sns", region).get_topic_attributes(TopicArn=rid)
    return True


def reconcile_topic(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    return {"arn": rid}


def put_topic_policy(
    m: Harness, name: str, region: str, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    arn = str(inputs["arn"])
    m.client_for("sns", region).set_topic_attributes(
        TopicArn=arn, AttributeName="Policy", AttributeValue=policy_text(inputs["policy"])
    )
    return arn, {}


def topic_policy_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    m.client_for("sns", region).get_topic_attributes(TopicArn=rid)
    return not m.is_fresh(rid)


def _put_rule(m: Harness, rule: str, region: str, inputs: dict[str, Any]) -> str:
    arn: str = m.client_for("events", region).put_rule(
        Name=rule,
        EventPattern=str(inputs["eventPattern"]),
        Description=str(inputs.get("description", "")),
        State="ENABLED",
    )["RuleArn"]
    return arn


def create_rule(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rule = str(inputs.get("name") or f"{name}-{m.suffix}")[:64]
    arn = _put_rule(m, rule, region, inputs)
    m.mark_fresh(rule)
    return rule, {"name": rule, "arn": arn}


def rule_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    m.client_for("events", region).describe_rule(Name=rid)
    return True


def reconcile_rule(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    """An existing rule: re-put, not a new one (and not marked fresh)."""
    return {"name": rid, "arn": _put_rule(m, rid, region, inputs)}


def put_target(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rule, target = str(inputs["rule"]), str(inputs.get("targetId") or name)
    answer = m.client_for("events", region).put_targets(
        Rule=rule, Targets=[{"Id": target, "Arn": str(inputs["arn"])}]
    )
    if answer.get("FailedEntryCount"):
        raise HarnessError(f"EventBridge refused target {target} of rule {rule}: {answer['FailedEntries']}")
    return f"{rule}-{target}", {"rule": rule, "targetId": target}


def target_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    rule = str((record.get("outputs") or {}).get("rule") or rid.rsplit("-", 1)[0])
    targets = m.client_for("events", region).list_targets_by_rule(Rule=rule)["Targets"]
    return not m.is_fresh(rule) and bool(targets)


def reconcile_topic_policy(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    return put_topic_policy(m, rid, region, inputs)[1]


def reconcile_target(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    return put_target(m, rid, region, inputs)[1]


KINDS = {
    "aws:sns/topic:Topic": Kind(create_topic, topic_exists, reconcile_topic),
    "aws:sns/topicPolicy:TopicPolicy": Kind(put_topic_policy, topic_policy_exists, reconcile_topic_policy),
    "aws:cloudwatch/eventRule:EventRule": Kind(create_rule, rule_exists, reconcile_rule),
    "aws:cloudwatch/eventTarget:EventTarget": Kind(put_target, target_exists, reconcile_target),
}

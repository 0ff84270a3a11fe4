"""Alarms: the KMS events that change who can read a class, sent to one SNS topic per stack and region.

EventBridge rules in both regions match the CloudTrail records of PutKeyPolicy,
DeleteImportedKeyMaterial, ScheduleKeyDeletion and DisableKey on KMS, and KMS's own
"imported key material expiration" event; each rule targets the stack's topic in its
region, whose policy lets only EventBridge of this account publish. CloudTrail must
record management events in both regions for the API-call rules to fire (docs/aws.md).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.model.settings import StackSettings
from infra.program._opts import child, json_output
from infra.program.providers import RegionalProviders

KMS_API_EVENTS: tuple[str, ...] = (
    "PutKeyPolicy",
    "DeleteImportedKeyMaterial",
    "ScheduleKeyDeletion",
    "DisableKey",
)
EXPIRATION_DETAIL_TYPE = "KMS Imported Key Material Expiration"


def api_call_pattern() -> dict[str, Any]:
    return {
        "source": ["aws.kms"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"eventSource": ["kms.amazonaws.com"], "eventName": list(KMS_API_EVENTS)},
    }


def expiration_pattern() -> dict[str, Any]:
    return {"source": ["aws.kms"], "detail-type": [EXPIRATION_DETAIL_TYPE]}


def topic_policy(topic_arn: str, account_id: str) -> dict[str, Any]:
    """Only EventBridge, on behalf of this account, may publish to the alarm topic."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventBridgeOfThisAccountPublishes",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


class KeyAlarms(pulumi.ComponentResource):
    """Per region: an SNS topic, its policy, and two EventBridge rules targeting it."""

    topics: dict[str, aws.sns.Topic]

    def __init__(
        self,
        settings: StackSettings,
        providers: RegionalProviders,
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        name = f"{settings.namespace}-key-alarms"
        super().__init__("clefs:infra:KeyAlarms", name, None, opts)
        self.topics = {}
        rules = {"kms-api": api_call_pattern(), "material-expiry": expiration_pattern()}
        for region in settings.regions:
            provider = providers.for_region(region)
            topic = aws.sns.Topic(
                f"{name}-{region}",
                tags={"clefs:purpose": "key-alarms", "clefs:stack": settings.stack},
                opts=child(self, provider),
            )
            aws.sns.TopicPolicy(
                f"{name}-{region}-policy",
                arn=topic.arn,
                policy=json_output(topic_policy, topic_arn=topic.arn, account_id=account_id),
                opts=child(self, provider),
            )
            for rule_name, pattern in rules.items():
                rule = aws.cloudwatch.EventRule(
                    f"{name}-{rule_name}-{region}",
                    description=f"Clefs {settings.namespace}: {rule_name} on the class keys",
                    event_pattern=json.dumps(pattern, sort_keys=True),
                    opts=child(self, provider),
                )
                aws.cloudwatch.EventTarget(
                    f"{name}-{rule_name}-{region}-to-topic",
                    rule=rule.name,
                    target_id="clefs-key-alarms",
                    arn=topic.arn,
                    opts=child(self, provider),
                )
            self.topics[region] = topic
        self.register_outputs({"topics": {region: t.arn for region, t in self.topics.items()}})

"""The Clefs program: `build()` wires the components and returns the stack outputs."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from infra.model.data_classes import ENCRYPTION_CONTEXT_KEY, DataClass
from infra.model.outputs import SCHEMA as OUTPUTS_SCHEMA
from infra.model.settings import OBJECT_KEYS, StackSettings, settings_from_config
from infra.program.alarms import KeyAlarms
from infra.program.keys import ClassKey
from infra.program.providers import RegionalProviders
from infra.program.roles import Roles
from infra.program.storage import ClassProtection, ClassStorage
from infra.program.transcripts import TranscriptBucket


def load_settings() -> StackSettings:
    """Validated settings from the `clefs:*` stack config."""
    config = pulumi.Config("clefs")

    def get(key: str) -> object | None:
        return config.get_object(key) if key in OBJECT_KEYS else config.get(key)

    return settings_from_config(get, pulumi.get_stack())


class DataClassStack(pulumi.ComponentResource):
    """Everything one data class needs, in both regions; its outputs carry the class contract."""

    def __init__(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        roles: Roles,
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:DataClass", dc.name, None, opts)
        inner = pulumi.ResourceOptions(parent=self)
        self.storage = ClassStorage(dc, settings, providers, account_id, opts=inner)
        self.key = ClassKey(
            dc,
            settings,
            providers,
            roles,
            account_id,
            replication_role_arn=self.storage.replication_role.arn,
            bucket_arns=self.storage.bucket_arns,
            opts=inner,
        )
        self.protection = ClassProtection(dc, settings, providers, self.storage, self.key, opts=inner)
        key_ids = self.key.key_ids
        self.summary: dict[str, Any] = {
            "end_to_end": dc.end_to_end,
            "client_side_encryption": dc.client_side_encryption,
            "protection": list(dc.protection),
            "encryption_context": {ENCRYPTION_CONTEXT_KEY: dc.name},
            "regions": {
                region: {
                    "key_arn": self.key.key_arns[region],
                    "key_id": key_ids[region],
                    "alias": self.key.aliases[region].name,
                    "bucket": self.storage.buckets[region].bucket,
                    "bucket_arn": self.storage.buckets[region].arn,
                }
                for region in settings.regions
            },
            "replication_role": self.storage.replication_role.arn,
        }
        self.register_outputs({"data_class": dc.name, **self.summary})


def build(settings: StackSettings | None = None) -> dict[str, Any]:
    """Declare every resource; return the stack outputs (name -> value or Output): the
    clefs.stack-outputs/v1 contract, checked by infra.model.outputs.parse_outputs."""
    settings = settings if settings is not None else load_settings()
    providers = RegionalProviders("clefs", settings)
    caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=providers.primary))
    account_id = caller.account_id
    roles = Roles("clefs", settings, account_id, providers.primary, caller_arn=caller.arn)
    classes = {
        dc.name: DataClassStack(dc, settings, providers, roles, account_id) for dc in settings.data_classes
    }
    transcripts = TranscriptBucket(
        f"{settings.namespace}-transcripts", settings, providers.primary, ceremony_role=roles.ceremony
    )
    alarms = KeyAlarms(settings, providers, account_id)

    outputs: dict[str, Any] = {
        "schema": OUTPUTS_SCHEMA,  # the contract these outputs follow (docs/stack-outputs.md)
        "primary_region": settings.primary_region,
        "replica_region": settings.replica_region,
        "account_id": account_id,
        "stack": settings.stack,
        "namespace": settings.namespace,
        "classes": {name: cls.summary for name, cls in classes.items()},
        "transcript_bucket": transcripts.bucket.bucket,
        "alarm_topics": {region: topic.arn for region, topic in alarms.topics.items()},
        "roles": {
            "admin": roles.admin.arn,
            "app": roles.app.arn,
            "ceremony": roles.ceremony.arn,
            "auditor": roles.auditor.arn,
            "deployer": roles.deployer_arn,
            "replication": {name: cls.storage.replication_role.arn for name, cls in classes.items()},
        },
    }
    for name, cls in classes.items():
        for region, values in cls.summary["regions"].items():
            outputs[f"{name}/{region}/key_arn"] = values["key_arn"]
            outputs[f"{name}/{region}/alias"] = values["alias"]
            outputs[f"{name}/{region}/bucket"] = values["bucket"]
    return outputs

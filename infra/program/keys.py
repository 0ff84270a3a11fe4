"""L1 key per data class: a multi-region EXTERNAL key pair whose material only the HSM imports.

`aws.kms.ExternalKey(multi_region=True)` in the primary region and
`aws.kms.ReplicaExternalKey` in the replica region, both created WITHOUT `key_material_base64`:
they stay PendingImport until the ceremony imports the same HSM-wrapped material into each, so
no key material ever enters Pulumi config or state.

The HSM's import changes some of their attributes out of band (docs/infra.md, "Drift"):
`validTo` and the expiration model when material expires, `enabled`/key state, and
`keyMaterialBase64`, which stays empty here for good. They are in `IMPORT_OWNED` and
ignored by Pulumi, so a `pulumi refresh` after an import does not make the next `up`
clear the expiry and re-import empty material (which the key policy would refuse anyway).
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.model.data_classes import COPY_PRIMARY, COPY_REPLICA, TAG_COPY, TAG_DATA_CLASS, DataClass
from infra.model.settings import StackSettings
from infra.program import documents
from infra.program._opts import child, json_output
from infra.program.providers import RegionalProviders
from infra.program.roles import Roles

# Properties the ceremony's ImportKeyMaterial owns, not Pulumi (engine property names).
IMPORT_OWNED: tuple[str, ...] = ("validTo", "keyMaterialBase64", "enabled", "expirationModel", "keyState")


def import_owned(opts: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=list(IMPORT_OWNED)))


class ClassKey(pulumi.ComponentResource):
    primary: aws.kms.ExternalKey
    replica: aws.kms.ReplicaExternalKey
    aliases: dict[str, aws.kms.Alias]

    def __init__(
        self,
        dc: DataClass,
        settings: StackSettings,
        providers: RegionalProviders,
        roles: Roles,
        account_id: pulumi.Input[str],
        replication_role_arn: pulumi.Input[str],
        bucket_arns: dict[str, pulumi.Output[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:ClassKey", dc.name, None, opts)
        primary_region, replica_region = settings.regions
        self.regions = settings.regions

        def policy(region: str, copy: str) -> pulumi.Output[str]:
            return _key_policy(dc, region, copy, roles, account_id, replication_role_arn, bucket_arns[region])

        description = f"Clefs L1 key for data class {dc.name} (BYOK from the HSM L0 key)"
        self.primary = aws.kms.ExternalKey(
            f"{dc.name}-{primary_region}",
            description=description,
            multi_region=True,
            key_usage="ENCRYPT_DECRYPT",
            key_spec="SYMMETRIC_DEFAULT",
            deletion_window_in_days=settings.key_deletion_window_days,
            bypass_policy_lockout_safety_check=False,
            policy=policy(primary_region, COPY_PRIMARY),
            tags={TAG_DATA_CLASS: dc.name, TAG_COPY: COPY_PRIMARY},
            opts=import_owned(child(self, providers.primary)),
        )
        self.replica = aws.kms.ReplicaExternalKey(
            f"{dc.name}-{replica_region}",
            description=description,
            primary_key_arn=self.primary.arn,
            deletion_window_in_days=settings.key_deletion_window_days,
            bypass_policy_lockout_safety_check=False,
            policy=policy(replica_region, COPY_REPLICA),
            tags={TAG_DATA_CLASS: dc.name, TAG_COPY: COPY_REPLICA},
            opts=import_owned(child(self, providers.replica)),
        )
        self.aliases = self._class_aliases(dc, settings, providers)
        self.register_outputs(
            {
                "data_class": dc.name,
                "key_arns": self.key_arns,
                "key_ids": self.key_ids,
                "aliases": {region: alias.name for region, alias in self.aliases.items()},
            }
        )

    def _class_aliases(
        self, dc: DataClass, settings: StackSettings, providers: RegionalProviders
    ) -> dict[str, aws.kms.Alias]:
        """The class alias in each region, on that region's key."""
        primary_region, replica_region = self.regions
        return {
            region: aws.kms.Alias(
                f"{dc.name}-{region}-alias",
                name=settings.alias(dc.name),
                target_key_id=key.arn,
                opts=child(self, providers.for_region(region)),
            )
            for region, key in ((primary_region, self.primary), (replica_region, self.replica))
        }

    @property
    def key_arns(self) -> dict[str, pulumi.Output[str]]:
        primary_region, replica_region = self.regions
        return {primary_region: self.primary.arn, replica_region: self.replica.arn}

    @property
    def key_ids(self) -> dict[str, pulumi.Output[str]]:
        # An ExternalKey's id is its key id; a replica shares the primary's mrk- key id.
        primary_region, replica_region = self.regions
        return {primary_region: self.primary.id, replica_region: self.replica.key_id}


def _key_policy(
    dc: DataClass,
    region: str,
    copy: str,
    roles: Roles,
    account_id: pulumi.Input[str],
    replication_role_arn: pulumi.Input[str],
    bucket_arn: pulumi.Output[str],
) -> pulumi.Output[str]:
    """The key policy of one copy of the class key (infra/program/kms_documents.py), as JSON."""
    return json_output(
        lambda **v: documents.key_policy(region=region, data_class=dc.name, copy=copy, **v),
        account_id=account_id,
        admin_arn=roles.admin.arn,
        app_arn=roles.app.arn,
        ceremony_arn=roles.ceremony.arn,
        auditor_arn=roles.auditor.arn,
        deployer_arn=roles.deployer_arn,
        replication_role_arn=replication_role_arn,
        bucket_arn=bucket_arn,
    )

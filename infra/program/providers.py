"""One explicit aws.Provider per region; nothing in the program uses the default provider."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.model.settings import StackSettings

LOCALSTACK_SERVICES = ("s3", "kms", "iam", "sts")
LOCALSTACK_CREDENTIAL = "test"  # LocalStack's public dummy credential, never a real secret


class RegionalProviders(pulumi.ComponentResource):
    """The primary-region and replica-region providers, configured from stack settings."""

    primary: aws.Provider
    replica: aws.Provider

    def __init__(
        self, name: str, settings: StackSettings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clefs:infra:RegionalProviders", name, None, opts)
        self._by_region: dict[str, aws.Provider] = {}
        for copy, region in (("primary", settings.primary_region), ("replica", settings.replica_region)):
            self._by_region[region] = aws.Provider(
                f"{name}-{copy}-{region}",
                region=region,
                opts=pulumi.ResourceOptions(parent=self),
                **_provider_args(settings),
            )
        self.primary = self._by_region[settings.primary_region]
        self.replica = self._by_region[settings.replica_region]
        self.register_outputs(
            {
                "primary_region": settings.primary_region,
                "replica_region": settings.replica_region,
                "regions": list(settings.regions),
                "localstack": settings.localstack,
            }
        )

    def for_region(self, region: str) -> aws.Provider:
        return self._by_region[region]


def _provider_args(settings: StackSettings) -> dict[str, object]:
    args: dict[str, object] = {
        "default_tags": aws.ProviderDefaultTagsArgs(
            tags={
                "clefs:project": pulumi.get_project(),
                "clefs:stack": pulumi.get_stack(),
                "clefs:managed-by": "pulumi",
            }
        ),
    }
    if settings.allowed_account_ids:
        args["allowed_account_ids"] = list(settings.allowed_account_ids)
    if settings.endpoint is not None:
        endpoint = settings.endpoint
        args.update(
            endpoints=[aws.ProviderEndpointArgs(**{svc: endpoint for svc in LOCALSTACK_SERVICES})],
            s3_use_path_style=True,
            skip_credentials_validation=True,
            skip_requesting_account_id=True,
            skip_metadata_api_check=True,
            access_key=LOCALSTACK_CREDENTIAL,
            secret_key=LOCALSTACK_CREDENTIAL,
        )
    return args

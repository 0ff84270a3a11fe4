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
                _provider_args(settings, region),
                opts=pulumi.ResourceOptions(parent=self),
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


def _provider_args(settings: StackSettings, region: str) -> aws.ProviderArgs:
    """The provider's inputs; None leaves an input unset (Pulumi omits it)."""
    tags = aws.ProviderDefaultTagsArgs(
        tags={
            "clefs:project": pulumi.get_project(),
            "clefs:stack": pulumi.get_stack(),
            "clefs:managed-by": "pulumi",
        }
    )
    allowed = list(settings.allowed_account_ids) or None
    if settings.endpoint is None:
        return aws.ProviderArgs(region=region, default_tags=tags, allowed_account_ids=allowed)
    endpoint = settings.endpoint
    return aws.ProviderArgs(
        region=region,
        default_tags=tags,
        allowed_account_ids=allowed,
        endpoints=[aws.ProviderEndpointArgs(**{svc: endpoint for svc in LOCALSTACK_SERVICES})],
        s3_use_path_style=True,
        skip_credentials_validation=True,
        skip_requesting_account_id=True,
        skip_metadata_api_check=True,
        access_key=LOCALSTACK_CREDENTIAL,
        secret_key=LOCALSTACK_CREDENTIAL,
    )

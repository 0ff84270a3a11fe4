"""The three human/workload roles named in every class key policy: admin, app, ceremony."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.model.settings import StackSettings
from infra.program import documents
from infra.program._opts import child, json_output

# Humans (key administrators, ceremony officers) must have MFA; the app is a workload.
_ROLE_SPECS = (
    ("admin", "Clefs key administrators: manage L1 keys, never use them", True),
    ("app", "Clefs application: Encrypt/Decrypt/GenerateDataKey under its data-class context", False),
    ("ceremony", "Clefs key ceremony: import HSM-wrapped key material only", True),
)


class Roles(pulumi.ComponentResource):
    admin: aws.iam.Role
    app: aws.iam.Role
    ceremony: aws.iam.Role

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        account_id: pulumi.Input[str],
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clefs:infra:Roles", name, None, opts)
        roles: dict[str, aws.iam.Role] = {}
        for role, description, require_mfa in _ROLE_SPECS:
            configured = settings.trusted_principals.get(role)
            principals: pulumi.Input[list[str]] = (
                list(configured)
                if configured
                else pulumi.Output.from_input(account_id).apply(lambda acct: [documents.account_root(acct)])
            )
            roles[role] = aws.iam.Role(
                f"{name}-{role}",
                description=description,
                assume_role_policy=json_output(
                    lambda principals, mfa=require_mfa: documents.role_trust_policy(
                        principals, require_mfa=mfa
                    ),
                    principals=principals,
                ),
                max_session_duration=3600,
                tags={"clefs:role": role},
                opts=child(self, provider),
            )
        self.admin, self.app, self.ceremony = roles["admin"], roles["app"], roles["ceremony"]
        self.register_outputs({role: r.arn for role, r in roles.items()})

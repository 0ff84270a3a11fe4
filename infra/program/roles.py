"""The three human/workload roles named in every class key policy: admin, app, ceremony."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.model.settings import StackSettings, deployer_from_caller
from infra.program import documents
from infra.program._opts import child, json_output

# Humans (key administrators, ceremony officers) must have MFA; the app is a workload.
_ROLE_SPECS = (
    ("admin", "Clefs key administrators: manage L1 keys, never use them", True),
    ("app", "Clefs application: Encrypt/Decrypt/GenerateDataKey under its data-class context", False),
    ("ceremony", "Clefs key ceremony: import HSM-wrapped key material only", True),
    ("auditor", "Clefs auditor: read keys, policies and bucket configuration; use nothing", True),
)


class Roles(pulumi.ComponentResource):
    """The human and workload roles every key policy names, and the deployer it trusts.

    `deployer_arn` is who may change a key policy: clefs:deployerArn, else the identity running
    `pulumi up` (its role, for a role session; see infra.settings.deployer_from_caller).
    """

    admin: aws.iam.Role
    app: aws.iam.Role
    ceremony: aws.iam.Role
    auditor: aws.iam.Role
    deployer_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        settings: StackSettings,
        account_id: pulumi.Input[str],
        provider: aws.Provider,
        caller_arn: pulumi.Input[str] | None = None,
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
        self.auditor = roles["auditor"]
        aws.iam.RolePolicy(
            f"{name}-auditor-read",
            role=self.auditor.id,
            policy=json.dumps(documents.auditor_role_policy(), sort_keys=True),
            opts=child(self, provider),
        )
        self.deployer_arn = pulumi.Output.from_input(settings.deployer_arn or caller_arn or account_id).apply(
            lambda arn: deployer_from_caller(str(arn)) if ":" in str(arn) else documents.account_root(arn)
        )
        self.register_outputs({**{role: r.arn for role, r in roles.items()}, "deployer": self.deployer_arn})

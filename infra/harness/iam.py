"""IAM resources in LocalStack: roles and their inline policies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from infra.harness.common import Harness, Kind, already_exists, aws_tags, error_code, policy_text

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def create_role(m: Harness, name: str, region: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    role_name = str(inputs.get("name") or f"{name}-{m.suffix}")[:64]
    try:
        role = m.client_for("iam", region).create_role(
            RoleName=role_name,
            AssumeRolePolicyDocument=policy_text(inputs["assumeRolePolicy"]),
            Description=str(inputs.get("description", "")),
            Tags=aws_tags(inputs.get("tags"), kms=False),
        )["Role"]
    except ClientError as exc:
        if error_code(exc) == "EntityAlreadyExists":
            raise already_exists("IAM role", role_name, region) from None
        raise
    m.mark_fresh(role_name)
    return role_name, {"name": role_name, "arn": role["Arn"], "uniqueId": role["RoleId"]}


def role_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    m.client_for("iam", region).get_role(RoleName=rid)
    return True


def reconcile_role(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    iam = m.client_for("iam", region)
    iam.update_assume_role_policy(RoleName=rid, PolicyDocument=policy_text(inputs["assumeRolePolicy"]))
    if inputs.get("tags"):
        iam.tag_role(RoleName=rid, Tags=aws_tags(inputs["tags"], kms=False))
    return {}


def create_role_policy(
    m: Harness, name: str, region: str, inputs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    policy_name = str(inputs.get("name") or f"{name}-{m.suffix}")
    role_name = str(inputs["role"]).rsplit("/", 1)[-1]
    m.client_for("iam", region).put_role_policy(
        RoleName=role_name, PolicyName=policy_name, PolicyDocument=policy_text(inputs["policy"])
    )
    return f"{role_name}:{policy_name}", {"name": policy_name}


def role_policy_exists(m: Harness, rid: str, record: Mapping[str, Any], region: str) -> bool:
    role, policy = rid.split(":", 1)
    if m.is_fresh(role):
        return False  # its role was just recreated: so is it
    m.client_for("iam", region).get_role_policy(RoleName=role, PolicyName=policy)
    return True


def reconcile_role_policy(
    m: Harness, rid: str, region: str, inputs: dict[str, Any], recorded: dict[str, Any]
) -> dict[str, Any]:
    role, policy = rid.split(":", 1)
    m.client_for("iam", region).put_role_policy(
        RoleName=role, PolicyName=policy, PolicyDocument=policy_text(inputs["policy"])
    )
    return {}


KINDS = {
    ROLE: Kind(create_role, role_exists, reconcile_role),
    ROLE_POLICY: Kind(create_role_policy, role_policy_exists, reconcile_role_policy),
}

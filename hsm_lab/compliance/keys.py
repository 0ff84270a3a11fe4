"""The class key (L1): its state and origin (BYOK), and its key policy checked with the policy
pack's own rules (separation of duties)."""

from __future__ import annotations

import json
from typing import Any

from hsm_lab.compliance.report import NOT_CHECKED, Cell, _call, _examples
from infra.model.outputs import ClassOutputs, RoleOutputs


def check_key(kms: Any, key_arn: str) -> Cell:
    answer, error = _call(lambda: kms.describe_key(KeyId=key_arn))
    if error:
        return Cell(False, f"key not readable ({error})")
    meta = answer["KeyMetadata"]
    state, origin = meta.get("KeyState"), meta.get("Origin")
    if origin != "EXTERNAL":
        return Cell(False, f"origin {origin}, not EXTERNAL (material not from the HSM)")
    if state == "PendingImport":
        return Cell(False, "no key material imported (PendingImport)")
    if state != "Enabled":
        return Cell(False, f"key state {state}")
    expiry = meta.get("ValidTo")
    model = meta.get("ExpirationModel", "")
    when = (
        f"expires {expiry:%Y-%m-%d}"
        if expiry
        else ("material expires" if model == "KEY_MATERIAL_EXPIRES" else "material does not expire")
    )
    return Cell(
        True,
        f"Enabled, EXTERNAL, material imported, {when}",
        "imported" + (" expires" if "expire" in when and "not" not in when else ""),
    )


def check_key_policy(
    kms: Any,
    key_arn: str,
    spec: ClassOutputs,
    region: str,
    role: str,
    roles: RoleOutputs | None,
    source: str,
) -> Cell:
    from policy.rules import KEY_POLICY_ROLES, key_policy_findings

    data_class = spec.name
    bucket_arn = spec.regions[region].bucket_arn
    replication = spec.replication_role
    if roles is None or not (bucket_arn and replication):
        return Cell(
            True,
            f"the stack outputs name no roles ({', '.join(KEY_POLICY_ROLES)}, replication): not checked",
            "–",
            NOT_CHECKED,
        )
    answer, error = _call(lambda: kms.get_key_policy(KeyId=key_arn, PolicyName="default"))
    if error:
        return Cell(False, f"key policy not readable ({error})", source=source)
    try:
        document = json.loads(answer["Policy"])
    except (TypeError, ValueError):
        return Cell(False, "key policy is not JSON", source=source)
    findings = key_policy_findings(
        document,
        data_class=data_class,
        region=region,
        copy=role,
        account_id=key_arn.split(":")[4],
        roles={r: roles.arn(r) for r in KEY_POLICY_ROLES},
        replication_role=replication,
        bucket_arn_in_region=bucket_arn,
    )
    if findings:
        return Cell(False, f"key policy: {_examples(findings, 3)}", source=source)
    return Cell(
        True, "key policy separates administration, use and import (policy pack rules)", "SoD", source
    )

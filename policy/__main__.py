"""Policy pack entry point: `pulumi preview --policy-pack policy` runs this file.

Constructing a PolicyPack starts the analyzer's gRPC server and blocks forever, so it happens
only here; the rules live in policy/rules.py (importable, unit-tested).
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.rules import POLICY_PACK_NAME, all_policies

PolicyPack(
    name=POLICY_PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=all_policies(),
)

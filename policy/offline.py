"""Run the policy pack's rules on the program's graph recorded under Pulumi mocks.

This is what `pulumi preview --policy-pack policy` would check, without a Pulumi CLI:
resource rules get each resource's inputs and provider, stack rules get every resource's
outputs (component outputs included, plus the stack outputs as the root Stack resource).

    python -m policy.offline                       # default config
    python -m policy.offline Pulumi.localstack.yaml
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.mocks import PROVIDER_TYPE, STACK_TYPE, RecordedResource, Recording, run_program
from policy.rules import all_policies


@dataclass(frozen=True)
class Violation:
    policy: str
    message: str
    urn: str | None

    def __str__(self) -> str:
        return f"[{self.policy}] {self.message}"


def _options(parent: str) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent or None,
    )


def _provider(rec: Recording, r: RecordedResource) -> PolicyProviderResource | None:
    provider = rec.by_urn.get(r.provider_urn or "")
    if provider is None:
        return None
    return PolicyProviderResource(provider.type, provider.inputs, provider.urn, provider.name)


def resource_args(
    rec: Recording, r: RecordedResource, config: Mapping[str, Any] | None = None
) -> ResourceValidationArgs:
    """What the engine's Analyze call would give a resource rule: the inputs."""
    return ResourceValidationArgs(
        r.type, r.inputs, r.urn, r.name, _options(r.parent), _provider(rec, r), dict(config or {})
    )


def stack_resources(rec: Recording) -> list[PolicyResource]:
    """What AnalyzeStack would give: outputs (component outputs for components) + the Stack."""
    stack_urn = f"urn:pulumi:{rec.stack}::{rec.project}::{STACK_TYPE}::{rec.project}-{rec.stack}"
    out: dict[str, PolicyResource] = {
        stack_urn: PolicyResource(
            STACK_TYPE, rec.outputs, stack_urn, f"{rec.project}-{rec.stack}", _options(""), None, None, [], {}
        )
    }
    for r in rec.resources:
        props = r.outputs if r.custom else (r.component_outputs or {})
        out[r.urn] = PolicyResource(
            r.type, props, r.urn, r.name, _options(r.parent), _provider(rec, r), None, [], {}
        )
    for r in rec.resources:
        res = out[r.urn]
        res.parent = out.get(r.parent)
        res.dependencies = [out[d] for d in r.dependencies if d in out]
        res.property_dependencies = {
            k: [out[d] for d in v if d in out] for k, v in r.property_dependencies.items()
        }
    return list(out.values())


def check(
    rec: Recording,
    policies: Sequence[Policy] | None = None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Violation]:
    """Every violation the policies report on the recording (config: policy name -> config)."""
    policies = list(policies) if policies is not None else all_policies()
    config = config or {}
    violations: list[Violation] = []
    stack = stack_resources(rec)
    for policy in policies:

        def report(message: str, urn: str | None = None, _name: str = policy.name) -> None:
            violations.append(Violation(_name, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for r in rec.resources:
                if r.custom or r.type == PROVIDER_TYPE:
                    policy.validate(resource_args(rec, r, config.get(policy.name)), report)
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(stack, dict(config.get(policy.name) or {})), report)
    return violations


def _stack_file_config(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in (data.get("config") or {}).items() if k.startswith("clefs:")}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config = _stack_file_config(Path(args[0])) if args else {}
    rec = run_program(config)
    violations = check(rec)
    for v in violations:
        print(v)
    print(f"{len(all_policies())} policies, {len(rec.resources)} resources: {len(violations)} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())

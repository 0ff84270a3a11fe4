"""Small helpers shared by the components (resource options, JSON outputs)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pulumi


def child(
    parent: pulumi.Resource,
    provider: pulumi.ProviderResource,
    depends_on: Sequence[pulumi.Resource] | None = None,
) -> pulumi.ResourceOptions:
    """Options for a child resource: always an explicit provider, never the default one."""
    return pulumi.ResourceOptions(
        parent=parent, provider=provider, depends_on=list(depends_on) if depends_on else None
    )


def json_output(build: Callable[..., dict[str, Any]], **inputs: pulumi.Input[Any]) -> pulumi.Output[str]:
    """`json.dumps(build(**resolved_inputs))` as an Output (stable key order)."""
    return pulumi.Output.all(**inputs).apply(lambda values: json.dumps(build(**values), sort_keys=True))

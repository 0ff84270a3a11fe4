"""Apply the program to LocalStack: the stack's config, one apply, and what it did."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.harness.common import ClientFactory
from infra.harness.localstack_mocks import LocalStackMocks
from infra.harness.state import STATE_FORMAT, load_state, save_state
from infra.mocks import Recording, run_program

REPO_ROOT = Path(__file__).resolve().parents[2]


def stack_config(endpoint: str, stack_file: Path | None = None) -> dict[str, Any]:
    """The `localstack` stack's config with its endpoint set to the running LocalStack."""
    path = stack_file or REPO_ROOT / "Pulumi.localstack.yaml"
    config = dict((yaml.safe_load(path.read_text()) or {}).get("config") or {})
    config["clefs:endpoint"] = endpoint
    return config


def apply(
    endpoint: str,
    client_for: ClientFactory,
    *,
    suffix: str | None = None,
    config: Mapping[str, Any] | None = None,
    program: Callable[[], Mapping[str, Any]] | None = None,
    state_path: Path | None = None,
    stack: str = "localstack",
) -> tuple[Recording, LocalStackMocks]:
    """Run the program against LocalStack; returns the recording (real ids) and the mocks.

    With `state_path`, what this stack created before is reconciled rather than created again,
    and the state is rewritten (atomically) after a successful run. Bucket names keep the
    state's suffix, so a stack recreated after a LocalStack restart gets the same names.
    """
    import secrets

    state = load_state(state_path)
    suffix = suffix or str(state.get("suffix") or "") or secrets.token_hex(3)
    mocks = LocalStackMocks(endpoint, client_for, suffix, state)
    settings = dict(config) if config is not None else stack_config(endpoint)
    recording = run_program(settings, program=program, stack=stack, pause_gc=False, mocks=mocks)
    if state_path is not None:
        save_state(
            state_path,
            {
                "format": STATE_FORMAT,
                "endpoint": endpoint,
                "account_id": mocks.account_id,
                "suffix": suffix,
                "resources": mocks.resources,
            },
        )
    return recording, mocks


def summary(mocks: LocalStackMocks) -> str:
    """One line: what this apply did (created, reconciled, recreated after a restart)."""
    created, reconciled, recreated = len(mocks.created), len(mocks.reconciled), len(mocks.recreated)
    if recreated and not reconciled:
        return (
            f"LocalStack no longer holds this stack (it keeps no state: was it restarted?): recreated all "
            f"{recreated + created} resources; the class keys are new and PendingImport"
        )
    parts = [f"{created} created", f"{reconciled} unchanged (reconciled)"]
    if recreated:
        parts.append(f"{recreated} recreated (they had vanished from LocalStack)")
    return ", ".join(parts)

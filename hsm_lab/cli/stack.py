"""`hsm-lab stack up|preview|destroy|outputs`: the Pulumi Automation API (see docs/infra.md);
`hsm-lab stack apply-localstack`: the same program applied to LocalStack without the Pulumi CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from hsm_lab import errors
from hsm_lab.cli import console
from hsm_lab.cli.app import out
from hsm_lab.cli.clients import _aws
from hsm_lab.lab import Lab
from infra.deploy import (
    DEFAULT_BACKEND_DIR,
    POLICY_PACK_DIR,
    DeployError,
    Target,
    destroy,
    outputs,
    preview,
    up,
)

app = console.new_app("Deploy the Clefs stacks with the Pulumi Automation API (local file backend).")
StackArg = Annotated[str, typer.Argument(help="Stack name: localstack, aws-example, ...")]
EndpointOpt = Annotated[
    str | None, typer.Option(help="Override clefs:endpoint (LocalStack URL) for this stack.")
]
PolicyOpt = Annotated[bool, typer.Option("--policy/--no-policy", help="Enforce the policy pack.")]
BackendOpt = Annotated[Path, typer.Option(help="Directory of the local file backend.")]


def _target(stack: str, endpoint: str | None, policy: bool, backend: Path) -> Target:
    config = {"clefs:endpoint": endpoint} if endpoint else {}
    return Target(
        stack=stack,
        backend_dir=backend,
        config=config,
        policy_pack=POLICY_PACK_DIR if policy else None,
    )


def _cli(step: Callable[[], Any]) -> Any:
    try:
        return step()
    except DeployError as exc:
        raise console.fail(exc) from None


@app.command("up")
def up_cmd(
    stack: StackArg = "localstack",
    endpoint: EndpointOpt = None,
    policy: PolicyOpt = True,
    backend: BackendOpt = DEFAULT_BACKEND_DIR,
) -> None:
    """Create or update the stack, then print its outputs as JSON."""
    result = _cli(lambda: up(_target(stack, endpoint, policy, backend)))
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


@app.command("preview")
def preview_cmd(
    stack: StackArg = "localstack",
    endpoint: EndpointOpt = None,
    policy: PolicyOpt = True,
    backend: BackendOpt = DEFAULT_BACKEND_DIR,
) -> None:
    """Show what `up` would change."""
    summary = _cli(lambda: preview(_target(stack, endpoint, policy, backend)))
    typer.echo(json.dumps(summary, sort_keys=True))


@app.command("destroy")
def destroy_cmd(
    stack: StackArg = "localstack",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    backend: BackendOpt = DEFAULT_BACKEND_DIR,
) -> None:
    """Delete every resource of the stack (KMS keys are scheduled for deletion)."""
    if not yes:
        typer.confirm(f"Destroy every resource of stack {stack!r}?", abort=True)
    summary = _cli(lambda: destroy(_target(stack, None, False, backend)))
    typer.echo(json.dumps(summary, sort_keys=True))


@app.command("outputs")
def outputs_cmd(stack: StackArg = "localstack", backend: BackendOpt = DEFAULT_BACKEND_DIR) -> None:
    """Print the stack outputs as JSON.

    Checked and stamped clefs.stack-outputs/v1 (docs/stack-outputs.md): save them as
    <lab>/stack-outputs.json.
    """
    from hsm_lab.aws.deployment import stack_outputs
    from hsm_lab.errors import ClefsError

    result = _cli(lambda: outputs(_target(stack, None, False, backend)))
    try:
        document = stack_outputs(result, f"stack {stack}").to_document()
    except ClefsError as exc:
        raise console.fail(exc) from None
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


STACK_STATE = "stack-state.json"


@app.command("apply-localstack")
def stack_apply_localstack(
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="LocalStack endpoint [default: conventions].")
    ] = None,
    lab: Annotated[Path | None, typer.Option("--lab", help="Lab directory (outputs go there).")] = None,
) -> None:
    """Apply the real program to LocalStack without the Pulumi CLI (mocks that create via boto3).

    The stack's state is <lab>/stack-state.json: applying again reconciles what exists and
    creates nothing twice; what LocalStack lost (a restart) is recreated, and said so.
    """
    from hsm_lab.aws.deployment import outputs_path, save_outputs
    from infra.harness import HarnessError, apply, summary

    where = Lab.at(lab)
    url, target, client_for = _aws(endpoint, False, where.root)
    try:
        recording, mocks = apply(url, client_for, state_path=where.root / STACK_STATE)
    except HarnessError as exc:
        raise errors.ClefsError(str(exc)) from None
    path = outputs_path(where.root)
    save_outputs(path, recording.outputs)
    out.print(f"{summary(mocks)}. LocalStack: {target}; outputs -> {path}")
    if mocks.recreated:
        out.print(
            "[yellow]the class keys are new: import them again from the HSM, `hsm-lab byok import "
            "--class C` for each class[/]"
        )
    out.print("[yellow]no Pulumi state was written: this is the CLI-less harness, not `pulumi up`[/]")

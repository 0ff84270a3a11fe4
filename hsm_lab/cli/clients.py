"""The AWS side of the commands: the stack outputs they read, clients per role, the record archive."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from hsm_lab import errors
from hsm_lab.ceremony import record
from hsm_lab.cli.app import Clients, out
from hsm_lab.lab import Lab
from infra.model.outputs import StackOutputs


def _aws(
    endpoint: str | None,
    real_aws: bool,
    lab_root: Path,
    stack: StackOutputs | None = None,
    profiles: dict[str, str | None] | None = None,
    trust_ca_bundle: bool = False,
) -> tuple[str, str, Clients]:
    """(url, description, the auditor's clients): for commands that only read."""
    url, description, roles = _role_clients(endpoint, real_aws, lab_root, stack, profiles, trust_ca_bundle)
    return url, description, roles["auditor"]


def _role_clients(
    endpoint: str | None,
    real_aws: bool,
    lab_root: Path,
    stack: StackOutputs | None = None,
    profiles: dict[str, str | None] | None = None,
    trust_ca_bundle: bool = False,
) -> tuple[str, str, dict[str, Clients]]:
    """(url, description, clients per role): real AWS, or HTTPS to LocalStack pinned to the lab's CA.

    Real AWS: one session per role (hsm_lab.aws.access), every endpoint override refused. On
    LocalStack one identity plays every role; the account is the stack's (its outputs), else
    this lab's own (docs/localstack.md: each lab is its own account). With `stack` (a command
    that reads it), every key and bucket it names must still exist.
    """
    from hsm_lab.aws import localstack
    from hsm_lab.aws.deployment import lab_account, localstack_clients, require_stack

    if real_aws:
        from hsm_lab.aws.access import ROLES
        from hsm_lab.aws.access import real_aws as real

        if endpoint:
            raise errors.InputError("--endpoint is for LocalStack; with --aws the endpoint is botocore's own")
        access = real(profiles, trust_ca_bundle=trust_ca_bundle)
        roles = {role: access.clients(role) for role in ROLES}
        if stack is not None:
            require_stack(stack, roles["auditor"], localstack=False)
        return "aws", access.describe(), roles
    ca = None
    if endpoint:
        url = localstack.check_endpoint(endpoint)
        if not localstack.is_healthy(localstack.health(url)):
            raise localstack.LocalStackError(
                f"LocalStack not reachable or not healthy at {url}: start it (`hsm-lab localstack start`) "
                "or pass the right --endpoint"
            )
    else:
        found = localstack.connect(lab_dir=lab_root)
        url, ca = found.endpoint, found.ca
    # the stack's account (outputs without one: LocalStack's default), else this lab's own
    account_id = stack.account_id if stack is not None else lab_account(lab_root)
    clients, pin = localstack_clients(url, lab_root, ca=ca, account_id=account_id)
    if stack is not None:  # a command that reads the stack: say so when LocalStack lost it
        require_stack(stack, clients, localstack=True)
    one = {"ceremony": clients, "app": clients, "auditor": clients}  # LocalStack: one identity
    return pin.url, f"{pin.url}, {pin.describe()}", one


def _archive(
    where: Lab, stack: StackOutputs, target: str, ceremony: Clients, say: Console | None = None
) -> None:
    """Archive the signed record in the stack's Object Lock bucket, as the ceremony role."""
    from hsm_lab.ceremony import archive

    bucket, region = stack.transcript_bucket, stack.primary_region
    if bucket is None:
        raise errors.InputError("the stack outputs name no transcript bucket: apply the stack again")
    state = record.verify_lab(where)
    folder = archive.upload(
        state,
        where.transcript.read_bytes(),
        where.transcript_head.read_bytes(),
        ceremony("s3", region),
        bucket,
    )
    enforced = "AWS enforces it" if target == "aws" else "LocalStack stores it, enforces nothing"
    (say or out).print(
        f"record archived: s3://{escape(bucket)}/{escape(folder)} by the ceremony role "
        f"(Object Lock COMPLIANCE configured; {enforced})"
    )


def _outputs(where: Lab, outputs: Path | None) -> StackOutputs:
    """The stack outputs (--outputs, else the lab's), checked: clefs.stack-outputs/v1."""
    from hsm_lab.aws.deployment import load_stack, outputs_path

    return load_stack(outputs_path(where.root, outputs))

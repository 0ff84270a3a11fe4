"""Deploy entry point (Pulumi Automation API, local file backend): up, preview, destroy, outputs.

    hsm-lab stack up localstack --endpoint http://127.0.0.1:4566
    hsm-lab stack outputs localstack

The commands are `hsm_lab/cli/stack.py` (the CLI layer); this module has no Typer. The Automation API
drives the Pulumi CLI; where it is not installed every command stops with one line saying how
to install it. State lives in <repo>/.pulumi (file backend, git-ignored); stack configs hold no
secrets, so an empty passphrase is used unless PULUMI_CONFIG_PASSPHRASE(_FILE) is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulumi import automation as auto

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKEND_DIR = REPO_ROOT / ".pulumi"
POLICY_PACK_DIR = REPO_ROOT / "policy"
INSTALL_HINT = (
    "install it with `curl -fsSL https://get.pulumi.com | sh` "
    "(or `brew install pulumi/tap/pulumi`, `choco install pulumi`), then put ~/.pulumi/bin on PATH"
)


class DeployError(RuntimeError):
    """A deploy step failed; str() is one line."""


class PulumiCliMissingError(DeployError):
    def __init__(self) -> None:
        super().__init__(f"Pulumi CLI not found: {INSTALL_HINT}")


def find_pulumi_cli() -> Path | None:
    """The `pulumi` executable on PATH, or in $PULUMI_HOME/bin or ~/.pulumi/bin; else None."""
    on_path = shutil.which("pulumi")
    if on_path:
        return Path(on_path)
    home = Path(os.environ.get("PULUMI_HOME", Path.home() / ".pulumi"))
    candidate = home / "bin" / "pulumi"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def require_pulumi_cli() -> Path:
    cli = find_pulumi_cli()
    if cli is None:
        raise PulumiCliMissingError()
    return cli


@dataclass(frozen=True)
class Target:
    """Which stack, where: work_dir holds Pulumi.yaml and Pulumi.<stack>.yaml."""

    stack: str
    work_dir: Path = REPO_ROOT
    backend_dir: Path = DEFAULT_BACKEND_DIR
    # Overrides, persisted into the stack's config file (Pulumi.<stack>.yaml in work_dir).
    config: Mapping[str, str] = field(default_factory=dict)
    policy_pack: Path | None = POLICY_PACK_DIR  # enforced on preview and up


def _env(target: Target) -> dict[str, str]:
    env = {
        "PULUMI_BACKEND_URL": target.backend_dir.resolve().as_uri(),
        "PULUMI_SKIP_UPDATE_CHECKS": "true",
    }
    if not {"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"} & set(os.environ):
        env["PULUMI_CONFIG_PASSPHRASE"] = ""
    return env


def select_stack(target: Target) -> auto.Stack:
    """Create or select the stack (checks the CLI first), applying config overrides."""
    cli = require_pulumi_cli()
    from pulumi import automation as auto

    target.backend_dir.mkdir(parents=True, exist_ok=True)
    command = None
    if shutil.which("pulumi") is None:  # found under PULUMI_HOME, not on PATH
        command = auto.PulumiCommand(root=str(cli.parent.parent))
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(target.work_dir), env_vars=_env(target), pulumi_command=command
    )
    try:
        stack = auto.create_or_select_stack(target.stack, work_dir=str(target.work_dir), opts=opts)
        current = stack.get_all_config()
        for key, value in target.config.items():
            if key not in current or current[key].value != value:
                stack.set_config(key, auto.ConfigValue(value=value))
    except auto.CommandError as exc:
        raise DeployError(_one_line(exc)) from exc
    return stack


def _one_line(exc: BaseException) -> str:
    """The first `error: ...` line of a CLI failure (else its last line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        at = line.find("error:")
        if at >= 0 and line[at + len("error:") :].strip():
            return line[at:]
    return lines[-1] if lines else type(exc).__name__


def _policy_packs(target: Target) -> list[str] | None:
    return [str(target.policy_pack)] if target.policy_pack is not None else None


def _run(step: Callable[[], Any]) -> Any:
    from pulumi import automation as auto

    try:
        return step()
    except auto.CommandError as exc:
        raise DeployError(_one_line(exc)) from exc


def up(target: Target, on_output: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """`pulumi up` (policy pack enforced); returns the stack outputs."""
    stack = select_stack(target)
    result = _run(lambda: stack.up(on_output=on_output, policy_packs=_policy_packs(target)))
    return {k: v.value for k, v in result.outputs.items()}


def preview(target: Target, on_output: Callable[[str], Any] | None = print) -> dict[str, int]:
    """`pulumi preview` (policy pack enforced); returns the change summary."""
    stack = select_stack(target)
    result = _run(lambda: stack.preview(on_output=on_output, policy_packs=_policy_packs(target)))
    return {str(k): int(v) for k, v in result.change_summary.items()}


def destroy(target: Target, on_output: Callable[[str], Any] | None = print) -> dict[str, int]:
    """`pulumi destroy`; returns the resource change summary."""
    stack = select_stack(target)
    result = _run(lambda: stack.destroy(on_output=on_output))
    return {str(k): int(v) for k, v in (result.summary.resource_changes or {}).items()}


def outputs(target: Target) -> dict[str, Any]:
    """The stack's current outputs."""
    stack = select_stack(target)
    return {k: v.value for k, v in _run(stack.outputs).items()}

"""The deploy entry point where no Pulumi CLI is installed: a clear one-line stop, nothing touched."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hsm_lab.cli import stack as stack_cli
from infra import deploy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment without any `pulumi` executable (PATH and PULUMI_HOME emptied)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    return tmp_path


def _fake_cli(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    cli = directory / "pulumi"
    cli.write_text("#!/bin/sh\nexit 0\n")
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    return cli


def test_missing_cli_error_is_one_line_with_install_instructions(no_cli: Path) -> None:
    assert deploy.find_pulumi_cli() is None
    with pytest.raises(deploy.PulumiCliMissingError) as info:
        deploy.require_pulumi_cli()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Pulumi CLI not found: install it with")
    assert "curl -fsSL https://get.pulumi.com | sh" in message


@pytest.mark.parametrize("step", [deploy.up, deploy.preview, deploy.destroy, deploy.outputs])
def test_every_step_stops_before_touching_anything(no_cli: Path, step: Callable[..., Any]) -> None:
    backend = no_cli / "state"
    with pytest.raises(deploy.PulumiCliMissingError):
        step(deploy.Target("localstack", backend_dir=backend))
    assert not backend.exists()


def test_cli_found_on_path_or_in_pulumi_home(no_cli: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_cli = _fake_cli(no_cli / "pulumi-home" / "bin")
    assert deploy.find_pulumi_cli() == home_cli
    path_cli = _fake_cli(no_cli / "empty-bin")
    assert deploy.find_pulumi_cli() == path_cli
    assert deploy.require_pulumi_cli() == path_cli


@pytest.mark.parametrize(
    "argv",
    [["up", "localstack"], ["preview", "aws-example"], ["destroy", "localstack", "--yes"], ["outputs"]],
)
def test_typer_commands_exit_1_with_one_line(no_cli: Path, argv: list[str]) -> None:
    result = CliRunner().invoke(stack_cli.app, [*argv, "--backend", str(no_cli / "state")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Pulumi CLI not found: install it with")
    assert result.stdout == ""


def test_module_entry_point_exits_non_zero_without_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "PULUMI_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "hsm_lab", "stack", "up", "localstack", "--backend", str(tmp_path / "state")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: Pulumi CLI not found: {deploy.INSTALL_HINT}"]


def test_backend_is_a_local_file_url_and_passphrase_defaults_to_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    env = deploy._env(deploy.Target("localstack", backend_dir=tmp_path / "state"))
    assert env["PULUMI_BACKEND_URL"] == (tmp_path / "state").resolve().as_uri()
    assert env["PULUMI_CONFIG_PASSPHRASE"] == ""
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "chosen")
    assert "PULUMI_CONFIG_PASSPHRASE" not in deploy._env(deploy.Target("x", backend_dir=tmp_path))


def test_default_target_is_the_repo_with_its_policy_pack() -> None:
    target = deploy.Target("localstack")
    assert target.work_dir == REPO and (REPO / "Pulumi.yaml").exists()
    assert target.backend_dir == REPO / ".pulumi"
    assert target.policy_pack == REPO / "policy" and (REPO / "policy" / "PulumiPolicy.yaml").exists()


def test_command_errors_are_reduced_to_one_line() -> None:
    text = "code: 255\n stdout: \n stderr: error: could not find a LocalStack\n  at line 2\n"
    assert deploy._one_line(RuntimeError(text)) == "error: could not find a LocalStack"
    assert deploy._one_line(RuntimeError("first\nlast line")) == "last line"

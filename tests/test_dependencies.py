"""pyproject.toml declares its dependencies as requirements.txt pins them; nothing unused is pinned."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version
    return pins


def test_pyproject_dependencies_match_the_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _pins()
    for spec in declared:
        name, version = spec.split("==")
        assert pins.get(_norm(name)) == version, f"{spec} is not pinned so in requirements.txt"


def test_no_unused_pin_of_the_encryption_sdk() -> None:
    assert "aws-encryption-sdk" not in _pins()


def test_the_callers_aws_endpoint_does_not_reach_the_suite() -> None:
    import os

    from tests.support import is_caller_variable

    assert not [n for n in os.environ if is_caller_variable(n)]

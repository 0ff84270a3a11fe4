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


def test_the_encryption_sdk_is_pinned_for_the_bench_only() -> None:
    """bench/datapath.py measures the ESDK as the reference (bench/datapath_reference.py); the
    library never imports it."""
    assert _pins().get("aws-encryption-sdk") == "4.0.7"
    assert "aws_encryption_sdk" in (REPO / "bench" / "datapath_reference.py").read_text()
    assert "esdk_reference" in (REPO / "bench" / "datapath.py").read_text()
    for module in [*(REPO / "hsm_lab").rglob("*.py"), *(REPO / "infra").rglob("*.py")]:
        assert "aws_encryption_sdk" not in module.read_text(), module


def test_the_callers_aws_endpoint_does_not_reach_the_suite() -> None:
    import os

    from tests.support import is_caller_variable

    assert not [n for n in os.environ if is_caller_variable(n)]

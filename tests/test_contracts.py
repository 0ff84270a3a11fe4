"""One contract each (issue 10, item 3): default regions in one place, no TLS-verify-off path."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from infra.model.settings import DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "infra" / "model" / "settings.py"


def _modules() -> Iterator[tuple[Path, ast.AST]]:
    for folder in ("hsm_lab", "infra", "policy", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _in_fresh_interpreter(test: str) -> None:
    """Run one scan below in a new Python: CPython 3.11's ast.parse can fail with "AST constructor
    recursion depth mismatch" once earlier tests in the same process changed the recursion state."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"import tests.test_contracts as t; t.{test}(fresh=True)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_default_regions_are_written_out_only_in_settings(fresh: bool = False) -> None:
    if not fresh:
        return _in_fresh_interpreter("test_default_regions_are_written_out_only_in_settings")
    regions = {DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION}
    found = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path, tree in _modules()
        if path != HOME
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in regions
    ]
    assert not found, f"import DEFAULT_PRIMARY_REGION / DEFAULT_REPLICA_REGION instead: {found}"


def test_no_tls_verification_off_path(fresh: bool = False) -> None:
    if not fresh:
        return _in_fresh_interpreter("test_no_tls_verification_off_path")
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            off = (
                (isinstance(node, ast.keyword) and node.arg == "verify")
                and isinstance(node.value, ast.Constant)
                and node.value.value is False
            )
            unverified = ("CERT_NONE", "_create_unverified_context")
            off |= isinstance(node, ast.Attribute) and node.attr in unverified
            off |= (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Attribute) and t.attr == "check_hostname" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and node.value.value is False
            )
            if off:
                found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}")
    assert not found, found

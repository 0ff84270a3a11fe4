"""The CLI is the only Typer/Rich code: every domain module imports without them (a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

# Every module that is not the CLI layer, imported in one fresh interpreter.
PROBE = """
import importlib, pkgutil, sys
skip = {"hsm_lab.__main__", "policy.__main__", "hsm_lab.cli"}  # policy.__main__ starts a gRPC server
names = []
def walk(name):
    module = importlib.import_module(name)
    names.append(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        if info.name not in skip:
            walk(info.name)
for top in ("hsm_lab", "infra", "policy"):
    walk(top)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("typer", "rich", "click"))
print(len(names), leaked[:5])
"""


def test_no_domain_module_imports_typer_or_rich() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    count, leaked = result.stdout.split(" ", 1)
    assert int(count) > 40, result.stdout
    assert leaked.strip() == "[]", f"domain modules pull in the CLI libraries: {leaked}"


def test_no_domain_module_imports_the_cli_package() -> None:
    """No edge from the domain to the CLI: `hsm_lab.cli` is imported by nothing but itself."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("hsm_lab/**/*.py"), *root.glob("infra/**/*.py"), *root.glob("policy/**/*.py")]:
        rel = path.relative_to(root).as_posix()
        if rel.startswith("hsm_lab/cli/") or rel == "hsm_lab/__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hsm_lab.cli"):
                offenders.append(rel)
            if isinstance(node, ast.Import) and any(a.name.startswith("hsm_lab.cli") for a in node.names):
                offenders.append(rel)
    assert offenders == []

"""`doctor`: is this machine and lab ready, and if not, what to run next.

Each check is one line: ok, FAIL or skip, what was looked at, and the next command. Nothing is
created or changed: a missing lab is reported, not made (the module is loaded only against an
existing lab's own SoftHSM2 config). A PIN is tried only when CLEFS_USER_PIN is set, and never
shown. Health of LocalStack is a GET of /_localstack/health on a loopback endpoint.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hsm_lab import errors
from hsm_lab.lab import PRIMARY_TOKEN, Lab

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "softhsm2-util": "apt-get install softhsm2",
    "pkcs11-tool": "apt-get install opensc",
    "age": "apt-get install age",
    "age-keygen": "apt-get install age",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "fail" | "skip"
    detail: str
    next: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}[self.status]
        tail = f"  → next: {self.next}" if self.next and self.status != "ok" else ""
        return f"{mark} {self.name:<10} {self.detail}{tail}"


def check_tools(which: Callable[[str], str | None] = shutil.which) -> Check:
    missing = [tool for tool in TOOLS if which(tool) is None]
    if missing:
        fixes = sorted({TOOLS[t] for t in missing})
        return Check("tools", "fail", f"not on PATH: {', '.join(missing)}", " && ".join(fixes))
    return Check("tools", "ok", ", ".join(TOOLS) + " found")


def check_venvs(root: Path = REPO_ROOT) -> Check:
    missing = [v for v in (".venv", ".venv-localstack") if not (root / v / "bin" / "python").exists()]
    if missing:
        return Check("venvs", "fail", f"missing in {root}: {', '.join(missing)}", "bash scripts/setup.sh")
    return Check("venvs", "ok", f".venv and .venv-localstack in {root}")


def check_module(module: str | None) -> Check:
    from hsm_lab.hsm import find_module

    try:
        path = find_module(module)
    except errors.ClefsError as exc:
        return Check("module", "fail", str(exc), "apt-get install softhsm2, or pass --module")
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return Check("module", "fail", f"{path} does not load: {exc}", "pass --module with a working .so")
    return Check("module", "ok", f"{path} loads")


def check_lab(lab: Lab) -> Check:
    if not lab.root.is_dir():
        return Check(
            "lab", "fail", f"{lab.root} does not exist (nothing was created)", "hsm-lab init --lab DIR"
        )
    if not (lab.root / "anchor.json").is_file():
        return Check(
            "lab", "fail", f"{lab.root} has no anchor.json: not initialised", f"hsm-lab init --lab {lab.root}"
        )
    try:
        from hsm_lab.ceremony.record import verify_lab

        state = verify_lab(lab)
    except errors.ClefsError as exc:
        return Check("lab", "fail", f"record does not verify: {exc}", "hsm-lab transcript verify")
    return Check("lab", "ok", f"{lab.root}: record verifies ({len(state.entries)} entries, files only)")


def check_tokens(lab: Lab, module: str | None, token: str, pin: str | None) -> list[Check]:
    if not (lab.root / "anchor.json").is_file():
        return [Check("tokens", "skip", "no initialised lab", f"hsm-lab init --lab {lab.root}")]
    from hsm_lab.hsm import HSM

    try:
        hsm = HSM(lab.root, module)
        labels = hsm.token_labels()
    except errors.ClefsError as exc:
        return [Check("tokens", "fail", str(exc), "hsm-lab doctor --module PATH")]
    found = [
        Check(
            "tokens",
            "ok" if token in labels else "fail",
            f"tokens: {', '.join(labels) or 'none'}",
            f"hsm-lab init --token {token}",
        )
    ]
    if token not in labels:
        return found
    if not pin:
        found.append(
            Check(
                "pin", "skip", "CLEFS_USER_PIN not set: not tried", "export CLEFS_USER_PIN (or be prompted)"
            )
        )
        return found
    try:
        with hsm.session(token, user_pin=pin):
            pass
    except errors.ClefsError as exc:
        found.append(Check("pin", "fail", str(exc), "check CLEFS_USER_PIN"))
    else:
        found.append(Check("pin", "ok", f"user PIN opens token {token}"))
    return found


def check_endpoint(endpoint: str | None) -> Check:
    from hsm_lab.aws import localstack

    url = (
        endpoint or os.environ.get(localstack.ENDPOINT_ENV) or f"https://127.0.0.1:{localstack.DEFAULT_PORT}"
    )
    try:
        report = localstack.health(url)
    except errors.ClefsError as exc:
        return Check("endpoint", "fail", str(exc), f"export {localstack.ENDPOINT_ENV}=https://127.0.0.1:4566")
    if not localstack.is_healthy(report):
        return Check("endpoint", "fail", f"LocalStack not healthy at {url}", "hsm-lab localstack start")
    return Check("endpoint", "ok", f"LocalStack healthy at {url} (S3, KMS)")


def check_outputs(lab: Lab) -> Check:
    from hsm_lab.aws.deployment import load_stack, outputs_path

    path = outputs_path(lab.root)
    if not path.is_file():
        return Check("stack", "fail", f"no {path.name} in the lab", "hsm-lab stack apply-localstack")
    try:
        stack = load_stack(path)
    except errors.ClefsError as exc:
        return Check("stack", "fail", str(exc), "hsm-lab stack apply-localstack")
    schema = "" if stack.declared else "; no schema: read as clefs.stack-outputs/v1"
    return Check("stack", "ok", f"{path.name}: classes {', '.join(sorted(stack.classes)) or 'none'}{schema}")


def run_checks(
    lab: Lab, *, module: str | None = None, endpoint: str | None = None, token: str = PRIMARY_TOKEN
) -> list[Check]:
    checks = [check_tools(), check_venvs(), check_module(module), check_lab(lab)]
    checks += check_tokens(lab, module, token, os.environ.get("CLEFS_USER_PIN") or None)
    checks += [check_endpoint(endpoint)]
    if (lab.root / "anchor.json").is_file():
        checks.append(check_outputs(lab))
    return checks

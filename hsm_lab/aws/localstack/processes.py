"""LocalStack's process: its environment, whether a PID is ours, signals, waiting for health."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import psutil

from hsm_lab.aws.localstack.config import _ENV_DENY, ENV_ALLOW, RUNTIME_MODULE, LocalStackError
from hsm_lab.aws.localstack.endpoints import health, is_healthy

# Processes this interpreter started, so stop() can reap them (no zombies, no warnings).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def localstack_env(settings: dict[str, str]) -> dict[str, str]:
    """LocalStack's whole environment: the allow-list (ENV_ALLOW) plus its own settings."""
    env = {key: os.environ[key] for key in ENV_ALLOW if key in os.environ}
    env.update(settings)
    leaked = sorted(key for key in env if _ENV_DENY.search(key))
    if leaked:  # a programming error, never a user's: refuse rather than pass a secret on
        raise LocalStackError(f"refusing to start LocalStack with {', '.join(leaked)} in its environment")
    return env


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie counts as gone; our own children are reaped)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _is_our_localstack(pid: int, data_dir: Path) -> bool:
    """True only if `pid` runs localstack.runtime.main with this lab's data directory."""
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        environ = process.environ()
    except psutil.Error:
        return False
    if RUNTIME_MODULE not in cmdline:
        return False
    return environ.get("FILESYSTEM_ROOT") == str(data_dir)


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` and its descendants (LocalStack may spawn helpers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total or None


def _port_in_use(port: int) -> bool:
    """Something listens on the port (LocalStack binds 0.0.0.0, so check that too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 -- bound for a moment, never listening
        except OSError:
            return True
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _terminate(pid: int, timeout: float) -> Literal["stopped", "killed"]:
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        outcome: Literal["stopped", "killed"] = "stopped"
    else:
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
        outcome = "killed"
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
    return outcome


def _log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _wait_healthy(url: str, timeout: float, alive: Callable[[], bool] | None = None) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        report = health(url, timeout=min(2.0, max(0.2, deadline - time.monotonic())))
        if is_healthy(report):
            return report
        if alive is not None and not alive():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)

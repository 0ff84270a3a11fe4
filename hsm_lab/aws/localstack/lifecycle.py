"""Start, stop, inspect and connect to the lab's LocalStack."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from hsm_lab.aws.localstack.config import (
    CA_ENV,
    DEFAULT_PORT,
    ENDPOINT_ENV,
    REPO_ROOT,
    RUNTIME_MODULE,
    SERVICES,
    START_TIMEOUT,
    STOP_TIMEOUT,
    LocalStackError,
)
from hsm_lab.aws.localstack.endpoints import (
    Endpoint,
    check_endpoint,
    configured_endpoint,
    health,
    is_healthy,
    is_loopback,
)
from hsm_lab.aws.localstack.files import LabPaths, _atomic_write, _read_pid_file, paths
from hsm_lab.aws.localstack.handle import LocalStack
from hsm_lab.aws.localstack.processes import (
    _CHILDREN,
    _alive,
    _is_our_localstack,
    _log_tail,
    _port_in_use,
    _rss_bytes,
    _terminate,
    _wait_healthy,
    localstack_env,
)
from hsm_lab.aws.localstack.tls import ensure_tls, trust_anchor
from hsm_lab.aws.localstack.venv import ensure_venv


def start(
    lab_dir: str | os.PathLike[str],
    port: int = DEFAULT_PORT,
    *,
    timeout: float = START_TIMEOUT,
    root: str | os.PathLike[str] = REPO_ROOT,
    echo: Callable[[str], None] | None = None,
) -> LocalStack:
    """Start LocalStack in host mode for this lab and wait until S3 and KMS are healthy.

    If this lab's LocalStack already runs, return it (``owned=False``). Refuse a port that
    something else holds. On failure or timeout, kill what was started and raise a one-line
    LocalStackError pointing at the log. It binds 127.0.0.1 only, with an allow-listed
    environment, serving the lab's own certificate (docs/localstack.md).
    """
    p = paths(lab_dir)
    endpoint = f"http://127.0.0.1:{port}"
    running_already = _already_running(p, endpoint, timeout)
    if running_already is not None:
        return running_already
    if _port_in_use(port):
        what = "a LocalStack" if is_healthy(health(endpoint, timeout=0.5)) else "something else"
        raise LocalStackError(
            f"port {port} is already in use by {what}: stop it, or set "
            f"{ENDPOINT_ENV}={endpoint} (and {CA_ENV}) to use it, or pick another port"
        )
    python = ensure_venv(root, echo=echo)
    p.data.mkdir(parents=True, exist_ok=True)
    ca = ensure_tls(p.root)
    if p.log.exists() and p.log.stat().st_size:
        os.replace(p.log, p.log.with_name(p.log.name + ".1"))  # keep the previous run's log
    began = time.monotonic()
    proc = _launch(python, p, port)
    record = {
        "pid": proc.pid,
        "port": port,
        "endpoint": endpoint,
        "ca": str(ca),
        "log": str(p.log),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write(p.pid, json.dumps(record, indent=2) + "\n")
    report = _wait_started(proc, p, endpoint, timeout)
    return LocalStack(
        endpoint,
        proc.pid,
        p.root,
        True,
        report.get("version"),
        round(time.monotonic() - began, 2),
        ca=ca,
    )


def _already_running(p: LabPaths, endpoint: str, timeout: float) -> LocalStack | None:
    """This lab's LocalStack if its pid file names one that still runs (``owned=False``); a stale
    pid file (the process is gone or is not ours) is removed."""
    record = _read_pid_file(p.pid)
    if record is None:
        return None
    pid = record["pid"]
    if _alive(pid) and _is_our_localstack(pid, p.data):
        url = str(record.get("endpoint") or endpoint)
        report = _wait_healthy(url, timeout, lambda: _alive(pid))
        if report is None:
            raise LocalStackError(
                f"this lab's LocalStack (pid {pid}) runs but is not healthy at {url}; "
                f"see {p.log} or run `hsm-lab localstack stop`"
            )
        ca = p.ca if p.ca.is_file() else None
        return LocalStack(url, pid, p.root, False, report.get("version"), ca=ca)
    p.pid.unlink(missing_ok=True)  # stale: the process is gone or is not ours
    return None


def _launch(python: Path, p: LabPaths, port: int) -> subprocess.Popen[bytes]:
    """The LocalStack process, on 127.0.0.1:`port`, with an allow-listed environment."""
    env = localstack_env(
        {
            # hypercorn binds exactly GATEWAY_LISTEN (twisted binds 0.0.0.0): docs/localstack.md
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "SERVICES": SERVICES,
            "OVERRIDE_IN_DOCKER": "0",  # this machine has /.dockerenv
            "FILESYSTEM_ROOT": str(p.data),
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "EAGER_SERVICE_LOADING": "1",
            # the lab's certificate; LocalStack splits it into .key/.crt with its umask (077)
            "CUSTOM_SSL_CERT_PATH": str(p.server_pem),
        }
    )
    with p.log.open("ab") as log:
        proc = subprocess.Popen(
            [str(python), "-m", RUNTIME_MODULE],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=p.dir,
            env=env,
            umask=0o077,  # the key file LocalStack writes beside server.pem stays private
            start_new_session=True,  # own session and process group: stop() signals the group
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_started(
    proc: subprocess.Popen[bytes], p: LabPaths, endpoint: str, timeout: float
) -> dict[str, Any]:
    """The health report once `proc` is healthy; else kill it, remove the pid file and raise."""
    report = _wait_healthy(endpoint, timeout, lambda: proc.poll() is None)
    if report is not None:
        return report
    code = proc.poll()
    if code is None:
        _terminate(proc.pid, 5.0)
        why = f"not healthy at {endpoint} after {timeout:.0f} s"
    else:
        _CHILDREN.pop(proc.pid, None)
        why = f"exited with code {code} during start"
    p.pid.unlink(missing_ok=True)
    last = _log_tail(p.log)
    raise LocalStackError(f"LocalStack {why}; see {p.log}" + (f" (last line: {last[:160]})" if last else ""))


StopOutcome = Literal["stopped", "killed", "not-running", "stale", "not-ours"]


@dataclass(frozen=True)
class Stopped:
    outcome: StopOutcome
    pid: int | None = None


def stop(lab_dir: str | os.PathLike[str], *, timeout: float = STOP_TIMEOUT) -> Stopped:
    """Stop this lab's LocalStack by the PID in its pid file; remove the pid file.

    Signals the process group (SIGTERM, then SIGKILL after `timeout`), and only if the PID
    is still our LocalStack (cmdline runs localstack.runtime.main with this lab's data dir);
    a PID that now belongs to something else is left alone.
    """
    p = paths(lab_dir)
    if not p.pid.exists():
        return Stopped("not-running")
    record = _read_pid_file(p.pid)
    if record is None:
        p.pid.unlink(missing_ok=True)
        return Stopped("stale")
    pid = record["pid"]
    if not _alive(pid):
        _CHILDREN.pop(pid, None)
        p.pid.unlink(missing_ok=True)
        return Stopped("stale", pid)
    if not _is_our_localstack(pid, p.data):
        p.pid.unlink(missing_ok=True)
        return Stopped("not-ours", pid)
    outcome = _terminate(pid, timeout)
    if _alive(pid):
        raise LocalStackError(f"LocalStack pid {pid} survived SIGKILL; see {p.log}")
    p.pid.unlink(missing_ok=True)
    return Stopped(outcome, pid)


@dataclass(frozen=True)
class Status:
    endpoint: str
    source: str
    healthy: bool
    version: str | None = None
    services: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # from this lab's pid file
    pid_alive: bool = False
    rss_bytes: int | None = None
    log: Path | None = None


def status(lab_dir: str | os.PathLike[str], *, allow_remote: bool = False) -> Status:
    """What runs where: this lab's LocalStack (pid file) or the configured endpoint."""
    p = paths(lab_dir)
    record = _read_pid_file(p.pid)
    pid = record["pid"] if record else None
    ours = pid is not None and _alive(pid) and _is_our_localstack(pid, p.data)
    if ours and record is not None and not os.environ.get(ENDPOINT_ENV, "").strip():
        endpoint = Endpoint(str(record.get("endpoint")), "lab")
    else:
        endpoint = configured_endpoint()
    url = check_endpoint(endpoint.url, allow_remote=allow_remote)
    report = health(url, allow_remote=allow_remote)
    services = {
        name: str(state)
        for name, state in ((report or {}).get("services") or {}).items()
        if state != "disabled"
    }
    return Status(
        url,
        endpoint.source,
        is_healthy(report),
        (report or {}).get("version"),
        services,
        pid,
        ours,
        _rss_bytes(pid) if ours and pid else None,
        p.log if p.log.exists() else None,
    )


def lab_instance(lab_dir: str | os.PathLike[str]) -> LocalStack | None:
    """This lab's own running LocalStack (from its pid file), or None."""
    p = paths(lab_dir)
    record = _read_pid_file(p.pid)
    if record is None or not _alive(record["pid"]) or not _is_our_localstack(record["pid"], p.data):
        return None
    url = str(record.get("endpoint") or f"http://127.0.0.1:{record.get('port', DEFAULT_PORT)}")
    return LocalStack(url, record["pid"], p.root, False, ca=p.ca if p.ca.is_file() else None)


def connect(
    *, allow_remote: bool = False, timeout: float = 2.0, lab_dir: str | os.PathLike[str] | None = None
) -> LocalStack:
    """The LocalStack to use, if it is healthy: $CLEFS_LOCALSTACK_ENDPOINT, else this lab's own
    (its pid file), else the configured endpoint. LocalStackError otherwise."""
    endpoint = configured_endpoint()
    own = lab_instance(lab_dir) if lab_dir is not None and not endpoint.external else None
    url = own.endpoint if own else check_endpoint(endpoint.url, allow_remote=allow_remote)
    source = "lab" if own else endpoint.source
    report = _wait_healthy(url, timeout)
    if report is None:
        hint = (
            f"start it, or unset {ENDPOINT_ENV} to let the lab start one"
            if endpoint.external
            else "start it with `hsm-lab localstack start`"
        )
        raise LocalStackError(f"LocalStack not reachable or not healthy at {url} (from {source}): {hint}")
    ca = own.ca if own else _known_ca(lab_dir)
    return LocalStack(url, own.pid if own else None, version=report.get("version"), source=source, ca=ca)


def _known_ca(lab_dir: str | os.PathLike[str] | None) -> Path | None:
    try:
        return trust_anchor(lab_dir)
    except LocalStackError:
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(
    lab_dir: str | os.PathLike[str],
    *,
    allow_remote: bool = False,
    timeout: float = START_TIMEOUT,
    echo: Callable[[str], None] | None = None,
) -> Iterator[LocalStack]:
    """A healthy LocalStack for the duration of the block. Stop what you start.

    With CLEFS_LOCALSTACK_ENDPOINT set it only ever uses that one. Otherwise it uses the
    configured endpoint if it is healthy *and* its certificate can be pinned (this lab's
    LocalStack, or $CLEFS_LOCALSTACK_CA); else it starts one for the lab on loopback (the
    configured port, or a free one when the default port holds a LocalStack it cannot pin)
    and stops it, by PID, on exit.
    """
    endpoint = configured_endpoint()
    url = check_endpoint(endpoint.url, allow_remote=allow_remote)
    if endpoint.external:
        yield connect(allow_remote=allow_remote)
        return
    port = endpoint.port
    report = health(url, allow_remote=allow_remote)
    if is_healthy(report):
        assert report is not None
        own = lab_instance(lab_dir)
        ca = own.ca if own else _known_ca(None)
        if ca is not None:
            yield LocalStack(url, version=report.get("version"), source=endpoint.source, ca=ca)
            return
        if endpoint.source != "default":
            raise LocalStackError(
                f"a LocalStack answers at {url} (from {endpoint.source}) but this lab did not start it: "
                f"its certificate cannot be pinned; set {CA_ENV}, or point {endpoint.source} at a free port"
            )
        port = _free_port()
        if echo:
            echo(f"a LocalStack this lab cannot pin answers at {url}: starting one on port {port}")
    if not is_loopback(url):
        raise LocalStackError(
            f"LocalStack not reachable at {url} (from {endpoint.source}), and the lab only "
            "starts one on loopback: start it there, or unset the endpoint"
        )
    started = start(lab_dir, port, timeout=timeout, echo=echo)
    if endpoint.source != "default" and port == endpoint.port:
        started = replace(started, endpoint=url, source=endpoint.source)
    try:
        yield started
    finally:
        if started.owned:
            stop(lab_dir)

"""`hsm-lab localstack start|stop|status|logs`: LocalStack for the lab (see docs/localstack.md)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hsm_lab.aws.localstack import (
    CA_ENV,
    ENDPOINT_ENV,
    START_TIMEOUT,
    STOP_TIMEOUT,
    LocalStackError,
    check_endpoint,
    configured_endpoint,
    connect,
    default_lab,
    paths,
    start,
    status,
    stop,
)
from hsm_lab.cli import console

app = console.new_app("LocalStack (S3, KMS) for the lab: host mode on loopback, or one already running.")
_out = console.out
_err = console.err

LabOption = typer.Option(
    None,
    "--lab",
    envvar="CLEFS_LAB",
    show_envvar=True,
    help="Lab directory [default: ./lab].",
    show_default=False,
)


def _lab(lab: Path | None) -> Path:
    return lab.resolve() if lab else default_lab()


def _mib(size: int | None) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size else "-"


@app.command("start")
def start_command(
    lab: Path | None = LabOption,
    port: int | None = typer.Option(
        None, help="Loopback port (default: from LOCALSTACK_HOST, else 4566).", show_default=False
    ),
    timeout: float = typer.Option(START_TIMEOUT, help="Seconds to wait for health."),
) -> None:
    """Start LocalStack in host mode for the lab (or check the configured one)."""
    try:
        endpoint = configured_endpoint()
        if endpoint.external:
            found = connect()
            _out.print(
                f"using LocalStack {found.version or ''} at {escape(found.endpoint)} "
                f"({ENDPOINT_ENV}); nothing started"
            )
            return
        check_endpoint(endpoint.url)  # clients would go there: a remote one is refused here too
        if port is None:
            port = endpoint.port

        def echo(message: str) -> None:
            _out.print(f"[dim]{escape(message)}[/]")

        with _out.status("starting LocalStack..."):
            ls = start(_lab(lab), port, timeout=timeout, echo=echo)
    except LocalStackError as error:
        raise console.fail(error) from None
    if ls.owned:
        _out.print(
            f"[green]LocalStack {ls.version or ''} healthy[/] at {ls.endpoint} "
            f"(pid {ls.pid}, {ls.startup_seconds:.1f} s, 127.0.0.1 only); log: {ls.log}"
        )
    else:
        _out.print(f"LocalStack already running at {ls.endpoint} (pid {ls.pid}); log: {ls.log}")
    _out.print(f"TLS: certificate issued by this lab's CA {ls.ca} (clients trust nothing else)")
    _out.print(
        f"[dim]other labs: export {ENDPOINT_ENV}={ls.endpoint} {CA_ENV}={ls.ca}; "
        "it keeps no state across a restart[/]"
    )


@app.command("stop")
def stop_command(
    lab: Path | None = LabOption,
    timeout: float = typer.Option(STOP_TIMEOUT, help="Seconds before SIGKILL."),
) -> None:
    """Stop the lab's LocalStack by its PID (never one this lab did not start)."""
    try:
        result = stop(_lab(lab), timeout=timeout)
    except LocalStackError as error:
        raise console.fail(error) from None
    messages = {
        "stopped": f"stopped LocalStack (pid {result.pid})",
        "killed": f"killed LocalStack (pid {result.pid}) after {timeout:.0f} s",
        "not-running": "no LocalStack started by this lab",
        "stale": f"LocalStack (pid {result.pid}) was already gone; pid file removed",
        "not-ours": f"pid {result.pid} is not this lab's LocalStack: left alone, pid file removed",
    }
    _out.print(messages[result.outcome])
    if result.outcome in ("stopped", "killed"):
        _err.print(
            "[yellow]warning:[/] LocalStack keeps no state: every key, bucket and record of this lab is "
            "gone; after the next start run `hsm-lab stack apply-localstack`, then "
            "`hsm-lab byok import --class C` for each class (docs/localstack.md)"
        )


@app.command("status")
def status_command(
    lab: Path | None = LabOption,
) -> None:
    """Show the endpoint, health, PID and memory; exit 1 when not healthy."""
    try:
        st = status(_lab(lab))
    except LocalStackError as error:
        raise console.fail(error) from None
    table = Table(show_header=False, box=None)
    table.add_row("endpoint", f"{st.endpoint} [dim]({st.source})[/]")
    table.add_row("healthy", "[green]yes[/]" if st.healthy else "[red]no[/]")
    table.add_row("version", st.version or "-")
    table.add_row("services", ", ".join(f"{k}={v}" for k, v in sorted(st.services.items())) or "-")
    if st.pid is not None:
        table.add_row("pid", f"{st.pid} ({'running' if st.pid_alive else 'not running'})")
        table.add_row("rss", _mib(st.rss_bytes))
    table.add_row("log", str(st.log or "-"))
    _out.print(table)
    if not st.healthy:
        raise typer.Exit(1)


@app.command("logs")
def logs_command(
    lab: Path | None = LabOption,
    lines: int = typer.Option(40, "--lines", "-n", help="How many lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """Print the tail of the lab's LocalStack log."""
    log = paths(_lab(lab)).log
    if not log.exists():
        raise console.fail(LocalStackError(f"no LocalStack log at {log}: start it first"))
    with log.open(errors="replace") as handle:
        for line in handle.read().splitlines()[-lines:]:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while follow:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)

"""The CLI's consoles and its one error printer: every user-controlled string is escaped here.

Rich reads `[...]` as markup: a custodian name, a TOML key, a path or a `--label` holding `[/x]`
would otherwise crash the printer (MarkupError) or vanish from the line. Errors are one line on
stderr and a non-zero exit (1, or the error's own `exit_code`); usage errors are Click's (exit 2).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

# Piped or in CI, Rich would wrap at 80 columns; a terminal or $COLUMNS decides otherwise.
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

DEBUG_ENV = "CLEFS_DEBUG"


def one_line(text: object) -> str:
    """`text` on one line, control characters shown as `?`, undecodable bytes as U+FFFD."""
    raw = str(text).encode("utf-8", "replace").decode("utf-8")
    flat = " ".join(raw.split())
    return "".join(c if c.isprintable() else "?" for c in flat)


def error_line(error: BaseException | str) -> str:
    """The one error line as printed (markup escaped), for tests and callers that log it."""
    return f"[bold red]error:[/] {escape(one_line(error))}"


def print_error(error: BaseException | str) -> None:
    err.print(error_line(error), soft_wrap=True)


def warn(line: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(one_line(line))}", soft_wrap=True)


def fail(error: BaseException | str) -> typer.Exit:
    """Print `error` as one line and return the Exit to raise (the error's exit_code, else 1)."""
    print_error(error)
    code = getattr(error, "exit_code", 1)
    return typer.Exit(code if isinstance(code, int) and code else 1)


def unexpected(exc: BaseException) -> int:
    """A bug, not bad input: one line naming it (the traceback with CLEFS_DEBUG=1), exit 1."""
    if os.environ.get(DEBUG_ENV):
        raise exc
    print_error(f"internal error {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")
    sys.stderr.flush()
    return 1

"""The CLI's consoles and its one error printer: every user-controlled string is escaped here.

Rich reads `[...]` as markup: a custodian name, a TOML key, a path or a `--label` holding `[/x]`
would otherwise crash the printer (MarkupError) or vanish from the line. Errors are one line on
stderr and a non-zero exit (1, or the error's own `exit_code`); usage errors are Click's (exit 2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import Abort, TyperException

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


def run(app: typer.Typer) -> int:
    """Run `app` on sys.argv: usage errors are one line (exit 2), Ctrl-C and refusals one line (1).

    ClefsError is the caller's (it knows the exit code); anything else is a bug, still one line.
    """
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # Click's usage errors (exit 2) and bad parameters
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as Click does
            err.print(exc.format_message(), markup=False, highlight=False)
            return 2
        ctx = getattr(exc, "ctx", None)
        where = str(getattr(ctx, "command_path", "") or "hsm-lab")
        print_error(f"{where}: {exc.format_message()} (see `{where} -h`)")
        return int(exc.exit_code) or 1
    except Abort:
        print_error("aborted")
        return 1
    return code if isinstance(code, int) else 0


def unexpected(exc: BaseException) -> int:
    """A bug, not bad input: one line naming it (the traceback with CLEFS_DEBUG=1), exit 1."""
    if os.environ.get(DEBUG_ENV):
        raise exc
    print_error(f"internal error {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")
    sys.stderr.flush()
    return 1


def new_app(help_text: str, *, no_args_is_help: bool = True, completion: bool = False) -> typer.Typer:
    """A Typer app as every one of the CLI is: help text is plain text (a bracketed
    "[env CLEFS_LAB; default ./lab]" must show, not be read as Rich markup), `-h` works like
    `--help`, errors never print a traceback."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=no_args_is_help,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
        add_completion=completion,  # the main app: `hsm-lab --install-completion` (bash, zsh, fish)
        pretty_exceptions_enable=False,
    )


LabOpt = Annotated[
    Path | None,
    typer.Option(
        "--lab",
        envvar="CLEFS_LAB",
        show_envvar=True,
        help="Lab directory [default: ./lab].",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from hsm_lab import __version__

        out.print(f"hsm-lab {__version__}")
        raise typer.Exit(0)


def add_version_option(app: typer.Typer) -> None:
    """`hsm-lab --version` prints the version and exits 0."""

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
            ),
        ] = False,
    ) -> None:
        """Clefs HSM lab: a 5-of-7 quorum key ceremony on any PKCS#11 HSM (SoftHSM2 by default)."""

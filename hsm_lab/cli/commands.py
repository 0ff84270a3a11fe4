"""`hsm-lab`: the one Typer app with every command group registered, and the console entry point.

The app, its consoles and shared options are in hsm_lab.cli.app; the commands, by group: the
ceremony steps (.ceremony), the record (.transcript), BYOK (.byok), compliance (.verify), the
rehearsal (.rehearse), then the sub-apps mounted below. Errors are one line on stderr and a
non-zero exit (hsm_lab.cli.console, the one error printer); nothing secret is ever printed.
"""

from __future__ import annotations

import os
import sys

from hsm_lab import errors
from hsm_lab.cli import console
from hsm_lab.cli.app import app

# Each module registers its commands on `app` when imported, and registration order is the order
# `--help` lists them in: the ceremony steps, the record, BYOK, then verify, then rehearse.
# isort: off
from hsm_lab.cli import ceremony, transcript, byok, verify, rehearse  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def _mount_subapps() -> None:
    from hsm_lab.cli.data import app as data_app
    from hsm_lab.cli.localstack import app as localstack_app
    from hsm_lab.cli.stack import app as stack_app

    app.add_typer(localstack_app, name="localstack")
    app.add_typer(stack_app, name="stack")
    app.add_typer(data_app, name="data")
    from hsm_lab.cli import day

    app.add_typer(day.ceremony_app, name="ceremony")
    app.add_typer(day.custodians_app, name="custodians")
    app.command("present")(day.present_command)
    app.command("script")(day.script_command)
    app.command("report")(day.report_command)
    app.command("doctor")(day.doctor_command)


_mount_subapps()


def main() -> None:
    """Console entry point: one-line errors, non-zero exits, no tracebacks.

    umask 077 first: whatever the lab or the PKCS#11 module writes is owner-only.
    """
    os.umask(0o077)
    try:
        code = console.run(app)  # usage errors: one line, exit 2; Ctrl-C: exit 1
    except errors.ClefsError as exc:
        console.print_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line, never a traceback (CLEFS_DEBUG=1 shows it)
        sys.exit(console.unexpected(exc))
    sys.exit(code)


if __name__ == "__main__":
    main()

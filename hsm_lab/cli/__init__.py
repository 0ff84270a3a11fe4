"""The command line: the only Typer/Rich code in Clefs (`hsm-lab`, `python -m hsm_lab`)."""

from hsm_lab.cli.commands import app, main

__all__ = ["app", "main"]

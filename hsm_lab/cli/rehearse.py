"""`hsm-lab rehearse`: the whole story in a fresh lab (hsm_lab.rehearsal), shown or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from hsm_lab import errors
from hsm_lab.cli.app import ModuleOpt, app, err, out


@app.command()
def rehearse(
    lab: Annotated[
        Path | None, typer.Option("--lab", help="A fresh (empty or absent) lab directory.")
    ] = None,
    module: ModuleOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Which custodians turn up.")] = None,
    ceremony_only: Annotated[
        bool, typer.Option("--ceremony-only", help="Only the HSM ceremony (no LocalStack, no AWS side).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable (schema clefs.rehearse/v1); steps on stderr.")
    ] = False,
) -> None:
    """The whole story in a fresh lab: ceremony, stack, BYOK, data path, compliance report."""
    from hsm_lab.ceremony_day.outputs import rehearse_doc
    from hsm_lab.cli.render import print_pyramid, print_rehearsal
    from hsm_lab.rehearsal import Rehearsal
    from hsm_lab.rehearsal.full import PyramidReport

    if lab is None:
        from datetime import UTC, datetime

        lab = Path("lab") / datetime.now(UTC).strftime("rehearsal-%Y%m%dT%H%M%SZ")
    say = err if as_json else out
    account: Rehearsal | PyramidReport

    with say.status("rehearsing", spinner="dots") as spinner:  # animates on a terminal between steps

        def step(text: str) -> None:
            say.print(f"[dim]→ {escape(text)}[/]")
            spinner.update(text)

        if ceremony_only:
            from hsm_lab.rehearsal import rehearse as run_ceremony

            account = run_ceremony(lab, module=module, seed=seed, on_step=step)
        else:
            from hsm_lab.rehearsal.full import rehearse_pyramid

            try:
                account = rehearse_pyramid(lab, module=module, seed=seed, on_step=step)
            except errors.ClefsError as exc:
                _show_partial(say, spinner, exc)
                raise
    if as_json:
        out.print_json(json.dumps(rehearse_doc(account)))
    elif isinstance(account, PyramidReport):
        print_pyramid(out, account)
    else:
        print_rehearsal(out, account)
    compliance = account.compliance if isinstance(account, PyramidReport) else None
    if compliance is not None and compliance.gaps:
        raise errors.ClefsError(f"{len(compliance.gaps)} gap(s): {compliance.gaps[0]}")
    if not ceremony_only and not as_json:
        out.print("[bold green]rehearsal OK[/]: L0 quorum → L1 BYOK in both regions → L2/L3 records, no gap")


def _show_partial(say: Console, spinner: Status, exc: errors.ClefsError) -> None:
    """A failed AWS side: the ceremony succeeded, show it (and the steps done) before the error."""
    from hsm_lab.cli.render import print_rehearsal

    partial = getattr(exc, "partial_report", None)
    if partial is not None:
        spinner.stop()
        print_rehearsal(say, partial.ceremony)
        done = ", ".join(f"{k} {v:.1f} s" for k, v in partial.timings.items())
        say.print(f"[yellow]the AWS side stopped after: {escape(done)}[/]")

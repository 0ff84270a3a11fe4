"""The readable account of a rehearsal: who held what, which shares were used, KCVs, timings."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hsm_lab.rehearsal import Rehearsal


def print_rehearsal(console: Console, report: Rehearsal) -> None:
    ceremonies = Table(title="Ceremony: the master key (L0) behind a quorum")
    for column in (
        "custodian",
        "set 1 " + report.first_ceremony[-8:],
        "set 2 " + report.second_ceremony[-8:],
    ):
        ceremonies.add_column(column)
    for name in report.custodians:
        first = "share" if name not in ("hugo", "ines") else "-"
        if name in report.import_quorum:
            first += " · import"
        if name in report.rekey_quorum:
            first += " · rekey"
        second = "share" if name != "gaelle" else "left (retired share refused)"
        ceremonies.add_row(name, first, second)
    console.print(ceremonies)

    keys = Table(title="Key check values (AES-ECB(K, 0¹²⁸), first 3 bytes, computed in the HSM)")
    keys.add_column("where")
    keys.add_column("KCV")
    keys.add_row(
        f"manifest {report.first_ceremony} ({report.threshold}-of-{report.share_count})",
        report.kcv_manifest,
    )
    keys.add_row("primary HSM (token clefs-primary)", report.kcv_primary)
    keys.add_row("recovery HSM (token clefs-recovery), rebuilt from 5 shares", report.kcv_recovery)
    keys.add_row(
        f"manifest {report.second_ceremony} ({report.new_threshold}-of-{report.new_share_count}) after rekey",
        report.kcv_after_rekey,
    )
    console.print(keys)

    if report.recovery_key:
        attrs = report.recovery_key.attributes
        console.print(
            "recovery key attributes: "
            + ", ".join(
                f"{k}={'yes' if attrs.get(k) else 'no'}"
                for k in (
                    "sensitive",
                    "extractable",
                    "wrap_with_trusted",
                    "derive",
                    "encrypt",
                    "modifiable",
                )
            )
        )
    console.print(f"retired share: [yellow]{report.retired_share_refusal}[/]")
    console.print(
        f"transcript: {report.transcript_entries} entries, chain OK, head {report.transcript_head[:16]}… "
        f"signed in the HSM by key {report.signer_key_id}"
    )
    timing = "  ".join(
        f"{step} {seconds * 1000:.0f} ms" for step, seconds in report.timings.items()
    )
    console.print(f"timings: {timing}")
    console.print(f"lab: {report.lab.root}  (nothing in it holds the key or a plaintext share)")
    console.print(
        "[bold green]rehearsal OK[/]: same KCV everywhere, quorum enforced, transcript verified"
    )

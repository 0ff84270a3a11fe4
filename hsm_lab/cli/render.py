"""The readable account of a rehearsal: who held what, which shares were used, KCVs, timings."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hsm_lab.ceremony.record import fingerprint_words, grouped
from hsm_lab.compliance import Report
from hsm_lab.compliance.report import CHECKS, CONFIGURED, NOT_CHECKED, OBSERVED
from hsm_lab.rehearsal import Rehearsal
from hsm_lab.rehearsal.full import PyramidReport


def _custodians_table(report: Rehearsal) -> Table:
    """Who held a share of each set, and who made up each quorum."""
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
    return ceremonies


def _kcv_table(report: Rehearsal) -> Table:
    """The key check values: the manifests' and the HSMs' (the same key everywhere)."""
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
    return keys


def print_rehearsal(console: Console, report: Rehearsal) -> None:
    console.print(_custodians_table(report))
    console.print(_kcv_table(report))

    if report.recovery_key:
        attrs = report.recovery_key.attributes
        console.print(
            "recovery key attributes: "
            + ", ".join(
                f"{k}={'yes' if attrs.get(k) else 'no'}"
                for k in (
                    "sensitive",
                    "extractable",
                    "derive",
                    "encrypt",
                    "modifiable",
                )
            )
        )
    console.print(f"retired share: [yellow]{escape(report.retired_share_refusal)}[/]")
    console.print(
        f"pinned signer (primary HSM): [bold]{grouped(report.pinned_signer)}[/]\n"
        f"  read aloud: [bold]{fingerprint_words(report.pinned_signer)}[/]"
    )
    console.print(
        f"recovery HSM's signing key {report.recovery_signer[:16]}… authorised by the import quorum "
        f"({', '.join(report.import_quorum)}), checkable offline through the quorum authority key"
    )
    console.print(
        f"record: {report.transcript_entries} entries, chain OK, head {report.transcript_head[:16]}… signed "
        f"in the HSM by key {report.signer_key_id} ({report.authorised_signers} authorised signers); "
        f"the recovery token holds {report.token_heads} append-only committed heads, and the chain matches"
    )
    timing = "  ".join(f"{step} {seconds * 1000:.0f} ms" for step, seconds in report.timings.items())
    console.print(f"timings: {timing}")
    console.print(f"lab: {report.lab.root}  (nothing in it holds the key or a plaintext share)")
    console.print(
        "[bold green]ceremony OK[/]: same KCV everywhere, L0 never extractable, quorum enforced, "
        "record verified against the pinned signer and the token"
    )


SOURCE_MARK = {OBSERVED: "[green]obs[/]", CONFIGURED: "[yellow]cfg[/]", NOT_CHECKED: "[dim]–[/]"}
COLUMN_TITLES = {
    "at_rest": "at rest",
    "uploads": "uploads",
    "key": "L1 key",
    "key_policy": "key policy",
    "in_transit": "transit",
    "end_to_end": "end to end",
    "replication": "replica",
    "public_access": "public",
    "versioning": "version",
}


def print_compliance(console: Console, report: Report, target: str) -> None:
    """One row per data class and region; each cell says where its truth comes from (--json: details)."""
    table = Table(title=f"Compliance from live state ({target})")
    columns = [(COLUMN_TITLES[name], name) for name in CHECKS]  # every cell verify reports
    table.add_column("class", no_wrap=True)
    table.add_column("region", no_wrap=True)
    for title, _name in columns:
        table.add_column(title)
    for row in report.rows:
        cells = []
        for _title, name in columns:
            cell = row.cells.get(name)
            if cell is None or cell.source == NOT_CHECKED:
                cells.append("[dim]– not checked[/]")
            elif cell.ok:
                cells.append(f"[green]✔[/] {cell.short} {SOURCE_MARK[cell.source]}")
            else:
                cells.append(f"[red]✘ GAP[/] {SOURCE_MARK[cell.source]}")
        table.add_row(row.data_class, row.region, *cells)
    console.print(table)
    console.print(
        "[green]obs[/] observed: read from live state and checked; [yellow]cfg[/] configured: read and "
        "evaluated (policy/iam.py), but not enforced by the emulator; – not checked"
    )
    bound = report.max_objects
    truncated = [f"{r.data_class} {r.region}" for r in report.rows if r.truncated]
    console.print(
        f"scanned {report.objects_scanned} stored object versions in {len(report.rows)} buckets "
        f"(every one, up to --max-objects {bound} per bucket"
        + (f"; bound reached in {', '.join(truncated)}" if truncated else "")
        + ")"
    )
    if report.not_enforced:
        console.print(
            "[yellow]LocalStack does not enforce[/]: "
            + "; ".join(report.not_enforced)
            + ". The cfg cells say what AWS would enforce with this state (docs/verify.md)."
        )
    for line in report.not_checked():
        console.print(f"[dim]not checked:[/] {line}")
    for gap in report.gaps:
        console.print(f"[red]gap:[/] {gap}")
    if not report.gaps:
        console.print("[bold green]no gap[/]: every class protected as its level requires, in every region")


def _imports_table(report: PyramidReport) -> Table:
    """L1: each class key imported (and proved) per region, with its wrapping and expiry."""
    imports = Table(title="L1 class keys: derived in the recovery HSM from L0, imported into KMS (BYOK)")
    for column in ("data class", "KCV", "region", "role", "wrapping", "material expires"):
        imports.add_column(column)
    for record in report.imports:
        if record.data_class not in report.proofs:
            continue
        wrapping = {"RSAES_OAEP_SHA_1": "OAEP-SHA1", "RSA_AES_KEY_WRAP_SHA_256": "RSA-AES-KWP-SHA256"}
        imports.add_row(
            record.data_class,
            record.kcv,
            record.region,
            record.role,
            wrapping.get(record.wrapping_algorithm, record.wrapping_algorithm),
            (record.expires or "never")[:10],
        )
    return imports


def _records_table(report: PyramidReport) -> tuple[Table, int]:
    """L2/L3: each sample record written and read back, and the KMS calls it all took."""
    records = Table(title="Data path: envelope clefs.envelope/v2, cached KMS data keys, SSE-KMS, HTTPS")
    for column in ("data class", "record", "bytes", "written to", "read back", "platform role alone"):
        records.add_column(column)
    kms_calls = 0
    for entry in report.records:
        if "kms_calls" in entry:
            kms_calls = entry["kms_calls"]
            continue
        records.add_row(
            entry["data_class"] + (" (e2e)" if entry["end_to_end"] else ""),
            entry["record_id"],
            str(entry["bytes"]),
            ", ".join(entry["regions"]),
            "yes" if entry["read_back"] else "NO",
            "refused" if entry["end_to_end"] else "reads",
        )
    return records, kms_calls


def print_pyramid(console: Console, report: PyramidReport) -> None:
    """The full rehearsal's account: ceremony, stack, BYOK, data path, compliance, drill."""
    print_rehearsal(console, report.ceremony)
    started = "started and stopped by the rehearsal" if report.localstack_started else "already running"
    console.print(
        f"\nLocalStack {report.endpoint} ({started}); Pulumi program applied through the mocks harness: "
        f"{report.resources} resources"
    )
    console.print(_imports_table(report))
    for data_class, proof in report.proofs.items():
        console.print(f"  proved {data_class}: {proof}")
    records, kms_calls = _records_table(report)
    console.print(records)
    console.print(
        f"KMS calls for all of it: {kms_calls} (data keys cached). Health documents are sealed with age to a "
        "patient and a practitioner: the platform's KMS and S3 rights yield ciphertext only. The Frankfurt "
        "copies are made by the rehearsal (`data replicate`: byte for byte, under the replica key): "
        "LocalStack stores S3 replication rules but copies nothing."
    )
    if report.compliance is not None:
        print_compliance(console, report.compliance, report.endpoint)
        if report.compliance.not_enforced:
            console.print(
                "[yellow]what this rehearsal cannot show[/]: LocalStack accepts plain-HTTP, SSE-S3 and "
                "other-key uploads and ignores key policies and public access blocks; on AWS the same "
                "state is enforced (the cfg cells above)."
            )
    console.print(
        f"revocation drill: material deleted from a dedicated key, decrypt refused ({report.revocation})"
    )
    if report.archive:
        console.print(
            f"signed record archived by the ceremony role: {escape(report.archive)}; Object Lock "
            "(COMPLIANCE) is configured on that bucket, and LocalStack does not enforce it"
        )
    timing = "  ".join(f"{step} {seconds:.1f} s" for step, seconds in report.timings.items())
    console.print(f"timings: {timing}")

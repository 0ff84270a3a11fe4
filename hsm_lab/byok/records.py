"""What BYOK imported where, read back from the verified transcript, and the checks made on it.

byok.json is only a copy of these records for people and tools (`save_copy`). The checks
take the records as a function so that they read the transcript when they run, after
the key ARN has been checked, as `Byok` always did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from hsm_lab.byok.kms import ByokError, arn_key_id, arn_region
from hsm_lab.ceremony.record import verify_lab
from hsm_lab.fs import atomic_write_text
from hsm_lab.lab import Lab


@dataclass(frozen=True)
class ImportRecord:
    data_class: str
    version: int
    key_arn: str
    region: str
    role: str  # "primary" or "replica"
    kcv: str
    wrapping_algorithm: str
    expires: str | None
    imported: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_records(lab: Lab) -> list[ImportRecord]:
    """What was imported where, from the verified transcript (not from byok.json)."""
    fields = set(ImportRecord.__dataclass_fields__)
    state = verify_lab(lab)
    return [
        ImportRecord(**{k: v for k, v in e["params"].items() if k in fields})
        for e in state.entries
        if e["action"] == "byok.import"
    ]


def save_copy(path: Path, records: list[ImportRecord]) -> None:
    """Write byok.json, the copy of the records for people and tools."""
    doc = {"format": "clefs.byok-records/v1", "imports": [asdict(r) for r in records]}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def check_replica_material(
    key_arn: str, data_class: str, version: int, kcv: str, records: Callable[[], list[ImportRecord]]
) -> None:
    """Refuse, before any AWS call, replica material that differs from its primary's."""
    key_id = arn_key_id(key_arn)
    primaries = [
        r
        for r in records()
        if r.role == "primary" and arn_key_id(r.key_arn) == key_id and r.region != arn_region(key_arn)
    ]
    if not primaries:
        raise ByokError(
            f"no import recorded for the primary of {key_arn} in this lab: import the primary first"
        )
    primary = primaries[-1]
    if (primary.data_class, primary.version, primary.kcv) != (data_class, version, kcv):
        raise ByokError(
            f"refusing to import {data_class} v{version} (KCV {kcv}) into {key_arn}: its primary "
            f"{primary.key_arn} holds {primary.data_class} v{primary.version} (KCV {primary.kcv}); "
            "a replica must get the same material"
        )


def check_same_material(
    key_arn: str, data_class: str, version: int, kcv: str, records: Callable[[], list[ImportRecord]]
) -> None:
    """A KMS key takes only the material it first got (AWS enforces it; LocalStack does not)."""
    for record in records():
        if record.key_arn == key_arn and (record.data_class, record.version, record.kcv) != (
            data_class,
            version,
            kcv,
        ):
            raise ByokError(
                f"refusing to import {data_class} v{version} (KCV {kcv}) into {key_arn}: it already "
                f"holds {record.data_class} v{record.version} (KCV {record.kcv}); a new key version "
                "needs a new KMS key"
            )

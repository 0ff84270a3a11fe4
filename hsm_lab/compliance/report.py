"""The compliance report's model: a cell per check, a row per class and region, the report
(`hsm-lab verify --json`, schema clefs.verify/v2, docs/verify.md); and the live-state call helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hsm_lab import errors
from hsm_lab.aws.access import ClientFactory as ClientFactory

SCHEMA = "clefs.verify/v2"

OBSERVED, CONFIGURED, NOT_CHECKED = "observed", "configured", "not checked"

CHECKS = (
    "at_rest",
    "uploads",
    "key",
    "key_policy",
    "in_transit",
    "end_to_end",
    "replication",
    "public_access",
    "versioning",
)

DEFAULT_MAX_OBJECTS = 10_000

WORKERS = 8

NOT_ENFORCED_BY_LOCALSTACK = (
    "bucket policies (TLS-only transport, SSE-KMS-only uploads)",
    "key policies (separation of duties)",
    "public access blocks",
    "S3 replication (the rule is stored, nothing is copied)",
)

FOREIGN_ACCOUNT = "999999999999"


@dataclass
class Cell:
    """One check for one class in one region."""

    ok: bool
    detail: str
    short: str = ""  # what the table shows; `detail` goes to gaps and --json
    source: str = OBSERVED

    def __post_init__(self) -> None:
        if not self.short:
            self.short = "GAP" if not self.ok else self.detail


@dataclass
class Row:
    data_class: str
    region: str
    role: str
    bucket: str
    key_arn: str
    end_to_end_required: bool
    objects_scanned: int = 0
    truncated: bool = False
    cells: dict[str, Cell] = field(default_factory=dict)

    def gaps(self) -> list[str]:
        return [
            f"{self.data_class} {self.region} {name}: {cell.detail}"
            for name, cell in self.cells.items()
            if not cell.ok
        ]


@dataclass
class Report:
    rows: list[Row]
    target: str = "aws"  # "localstack" or "aws"
    max_objects: int = DEFAULT_MAX_OBJECTS

    @property
    def gaps(self) -> list[str]:
        return [gap for row in self.rows for gap in row.gaps()]

    @property
    def objects_scanned(self) -> int:
        return sum(row.objects_scanned for row in self.rows)

    @property
    def not_enforced(self) -> list[str]:
        return list(NOT_ENFORCED_BY_LOCALSTACK) if self.target == "localstack" else []

    def not_checked(self) -> list[str]:
        return [
            f"{row.data_class} {row.region} {name}: {cell.detail}"
            for row in self.rows
            for name, cell in row.cells.items()
            if cell.source == NOT_CHECKED
        ]

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "ok": not self.gaps,
                "target": self.target,
                "max_objects": self.max_objects,
                "objects_scanned": self.objects_scanned,
                "not_enforced": self.not_enforced,
                "gaps": self.gaps,
                "rows": [asdict(row) for row in self.rows],
            },
            indent=2,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))


def _call(action: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return action(), None
    except ClientError as exc:
        return None, _code(exc)
    except BotoCoreError as exc:
        raise errors.ClefsError(f"cannot read live state: {' '.join(str(exc).split())[:200]}") from None


def _same_key(reference: str | None, key_arn: str) -> bool:
    if not reference:
        return False
    return reference == key_arn or key_arn.endswith("/" + reference.split("/")[-1])


def _examples(items: list[str], n: int = 2) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")

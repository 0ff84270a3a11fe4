"""Data classes and their protection levels: the model, defaults and config parsing.

Pure Python on purpose (no pulumi import) so that hsm_lab and the data path can import it.

Config shape (`clefs:dataClasses`, a list; adding a class is one entry)::

    clefs:dataClasses:
      - name: health-documents
        protection: [at-rest, in-transit, end-to-end]
      - name: appointments            # protection defaults to [at-rest, in-transit]
      - name: administrative
        description: billing, identity papers

Every class is always protected at rest (SSE-KMS under its own L1 key) and in transit (TLS 1.2+
only); `end-to-end` additionally means client-side encryption before anything reaches AWS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ENCRYPTION_CONTEXT_KEY = "data_class"
"""KMS encryption-context key the app role's key-policy condition is written against."""

AT_REST = "at-rest"
IN_TRANSIT = "in-transit"
END_TO_END = "end-to-end"
PROTECTION_LEVELS = (AT_REST, IN_TRANSIT, END_TO_END)
MANDATORY_PROTECTION = (AT_REST, IN_TRANSIT)

NAME_MIN, NAME_MAX = 3, 32
CLASS_NAME_PATTERN = r"[a-z0-9]+(?:-[a-z0-9]+)*"
"""The one grammar of a class name (no anchors): the config, the stack outputs and the envelope
header (hsm_lab.datapath.envelope builds its parser from it) all use this string."""
_NAME_RE = re.compile(CLASS_NAME_PATTERN)
_NAME_RULE = (
    f"use {NAME_MIN}-{NAME_MAX} characters of lowercase letters, digits and single hyphens, "
    "starting and ending with a letter or digit"
)
_ALLOWED_KEYS = ("name", "protection", "description")


# Tag keys shared by the program and the policy pack.
TAG_DATA_CLASS = "clefs:data-class"
TAG_PURPOSE = "clefs:purpose"
TAG_COPY = "clefs:copy"
PURPOSE_CLASS_DATA = "class-data"
PURPOSE_TRANSCRIPTS = "ceremony-transcripts"
COPY_PRIMARY = "primary"
COPY_REPLICA = "replica"


class DataClassConfigError(ValueError):
    """A one-line, precise error about the `clefs:dataClasses` config."""


def name_problem(name: object) -> str | None:
    """Why `name` is not a valid class name (None when it is valid)."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not NAME_MIN <= len(name) <= NAME_MAX or not _NAME_RE.fullmatch(name):  # `$` let a final \n in
        return f"{name!r} is invalid: {_NAME_RULE}"
    return None


@dataclass(frozen=True)
class DataClass:
    """One data class: its name (used in bucket names, aliases, encryption contexts) and levels."""

    name: str
    end_to_end: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem:
            raise DataClassConfigError(f"data class name {problem}")

    @property
    def protection(self) -> tuple[str, ...]:
        return (*MANDATORY_PROTECTION, END_TO_END) if self.end_to_end else MANDATORY_PROTECTION

    @property
    def client_side_encryption(self) -> bool:
        """Writers must encrypt client side (envelope under the class key) before upload."""
        return self.end_to_end

    def encryption_context(self, record_id: str | None = None) -> dict[str, str]:
        """The KMS encryption context the app must send for this class."""
        ctx = {ENCRYPTION_CONTEXT_KEY: self.name}
        if record_id is not None:
            ctx["record_id"] = record_id
        return ctx


DEFAULT_DATA_CLASSES: tuple[DataClass, ...] = (
    DataClass("health-documents", end_to_end=True, description="medical documents and reports"),
    DataClass("appointments", description="appointment slots and bookings"),
    DataClass("administrative", description="identity, billing and other administrative data"),
)


def _parse_protection(where: str, raw: object) -> bool:
    """Validate a protection list; return whether it includes end-to-end."""
    if raw is None:
        return False
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise DataClassConfigError(
            f"{where}.protection: expected a list such as [at-rest, in-transit, end-to-end]"
        )
    levels: list[str] = []
    for level in raw:
        if level not in PROTECTION_LEVELS:
            raise DataClassConfigError(
                f"{where}.protection: unknown level {level!r} (allowed: {', '.join(PROTECTION_LEVELS)})"
            )
        if level in levels:
            raise DataClassConfigError(f"{where}.protection: {level!r} is listed twice")
        levels.append(level)
    missing = [m for m in MANDATORY_PROTECTION if m not in levels]
    if missing:
        raise DataClassConfigError(f"{where}.protection: {', '.join(missing)} is mandatory for every class")
    return END_TO_END in levels


def _parse_entry(index: int, raw: object) -> DataClass:
    where = f"clefs:dataClasses[{index}]"
    if not isinstance(raw, Mapping):
        raise DataClassConfigError(f"{where}: expected a mapping with a name, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _ALLOWED_KEYS)
    if unknown:
        raise DataClassConfigError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_ALLOWED_KEYS)})"
        )
    if "name" not in raw:
        raise DataClassConfigError(f"{where}: missing 'name'")
    problem = name_problem(raw["name"])
    if problem:
        raise DataClassConfigError(f"{where}.name: {problem}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise DataClassConfigError(f"{where}.description: expected a string")
    end_to_end = _parse_protection(where, raw.get("protection"))
    return DataClass(raw["name"], end_to_end=end_to_end, description=description)


def parse_data_classes(raw: object | None) -> tuple[DataClass, ...]:
    """Parse the `clefs:dataClasses` config value (None means the three defaults)."""
    if raw is None:
        return DEFAULT_DATA_CLASSES
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise DataClassConfigError(f"clefs:dataClasses: expected a list of classes, got {type(raw).__name__}")
    if not raw:
        raise DataClassConfigError("clefs:dataClasses: at least one data class is required")
    classes: list[DataClass] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw):
        dc = _parse_entry(index, entry)
        if dc.name in seen:
            raise DataClassConfigError(
                f"clefs:dataClasses[{index}].name: {dc.name!r} duplicates entry {seen[dc.name]}"
            )
        seen[dc.name] = index
        classes.append(dc)
    return tuple(classes)


def to_config(classes: Sequence[DataClass]) -> list[dict[str, object]]:
    """The config value that parses back to `classes` (handy for tests and tooling)."""
    out: list[dict[str, object]] = []
    for dc in classes:
        entry: dict[str, object] = {"name": dc.name, "protection": list(dc.protection)}
        if dc.description:
            entry["description"] = dc.description
        out.append(entry)
    return out

"""The stack-outputs contract `clefs.stack-outputs/v1`: typed, versioned, one parser.

What the Pulumi program exports (infra/program/stack.py) and the lab keeps in
``<lab>/stack-outputs.json`` is read here and nowhere else: :func:`parse_outputs` checks every
field and returns frozen dataclasses; :meth:`StackOutputs.to_document` writes it back. The field
list, the choices (a file without ``schema`` is read as v1) and the JSON Schema are in
docs/stack-outputs.md and docs/schemas/stack-outputs.schema.json.

Pure Python on purpose (no pulumi import): hsm_lab imports it on every command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from infra.model.data_classes import name_problem
from infra.model.settings import _REGION_RE

_T = TypeVar("_T")
SCHEMA = "clefs.stack-outputs/v1"
AGAIN = "apply the stack again"
ROLE_NAMES = ("admin", "app", "ceremony", "auditor", "deployer")
FLAT_FIELDS = ("key_arn", "alias", "bucket")  # `<class>/<region>/<field>`: for `pulumi stack output`

_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):([0-9]{12}):key/[A-Za-z0-9-]{1,100}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ACCOUNT = re.compile(r"[0-9]{12}")
_TOP = (
    "schema",
    "classes",
    "primary_region",
    "replica_region",
    "account_id",
    "stack",
    "namespace",
    "transcript_bucket",
    "alarm_topics",
    "roles",
)
_CLASS = (
    "end_to_end",
    "regions",
    "client_side_encryption",
    "protection",
    "encryption_context",
    "replication_role",
)
_REGION = ("key_arn", "bucket", "key_id", "alias", "bucket_arn")


class OutputsError(ValueError):
    """The stack outputs are not a `clefs.stack-outputs/v1` document: one line, what and what to do."""


@dataclass(frozen=True)
class RegionOutputs:
    """One class in one region: its KMS key and its bucket."""

    key_arn: str
    bucket: str
    key_id: str | None = None
    alias: str | None = None
    bucket_arn: str | None = None

    @property
    def region(self) -> str:
        return self.key_arn.split(":")[3]

    @property
    def account(self) -> str:
        return self.key_arn.split(":")[4]


@dataclass(frozen=True)
class ClassOutputs:
    """One data class: its protection and its key and bucket per region (document order)."""

    name: str
    end_to_end: bool
    regions: Mapping[str, RegionOutputs]
    client_side_encryption: bool | None = None
    protection: tuple[str, ...] | None = None
    encryption_context: Mapping[str, str] | None = None
    replication_role: str | None = None

    def key_arns(self, primary_region: str) -> list[str]:
        """The class key ARNs, the primary region's first."""
        return [self.regions[r].key_arn for r in sorted(self.regions, key=lambda r: r != primary_region)]


@dataclass(frozen=True)
class RoleOutputs:
    """The roles every key policy names (ARNs), and the replication role of each class."""

    admin: str
    app: str
    ceremony: str
    auditor: str
    deployer: str
    replication: Mapping[str, str] = field(default_factory=dict)

    def arn(self, role: str) -> str:
        return str(getattr(self, role))


@dataclass(frozen=True)
class StackOutputs:
    """A checked `clefs.stack-outputs/v1` document."""

    classes: Mapping[str, ClassOutputs]
    primary_region: str
    replica_region: str | None = None
    account_id: str | None = None
    stack: str | None = None
    namespace: str | None = None
    transcript_bucket: str | None = None
    alarm_topics: Mapping[str, str] | None = None
    roles: RoleOutputs | None = None
    schema: str = SCHEMA
    declared: bool = True  # False: the document had no `schema` (written before v1), read as v1

    def data_class(self, name: str) -> ClassOutputs:
        """The class named `name`, or a one-line error listing the stack's classes."""
        found = self.classes.get(name)
        if found is None:
            known = ", ".join(sorted(self.classes)) or "none"
            raise OutputsError(f"no data class {name!r} in the stack (classes: {known})")
        return found

    def key_arns(self, name: str) -> list[str]:
        """The class key ARNs, primary region first."""
        return self.data_class(name).key_arns(self.primary_region)

    def to_document(self) -> dict[str, Any]:
        """The JSON document (with `schema`, and the flat `<class>/<region>/<field>` keys)."""
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "classes": {name: _class_document(c) for name, c in self.classes.items()},
            "primary_region": self.primary_region,
        }
        optional = {
            "replica_region": self.replica_region,
            "account_id": self.account_id,
            "stack": self.stack,
            "namespace": self.namespace,
            "transcript_bucket": self.transcript_bucket,
            "alarm_topics": dict(self.alarm_topics) if self.alarm_topics is not None else None,
            "roles": _roles_document(self.roles) if self.roles is not None else None,
        }
        document.update({k: v for k, v in optional.items() if v is not None})
        for name, spec in self.classes.items():
            for region, where in spec.regions.items():
                for key in FLAT_FIELDS:
                    value = getattr(where, key)
                    if value is not None:
                        document[f"{name}/{region}/{key}"] = value
        return document


def _class_document(spec: ClassOutputs) -> dict[str, Any]:
    out: dict[str, Any] = {"end_to_end": spec.end_to_end}
    if spec.client_side_encryption is not None:
        out["client_side_encryption"] = spec.client_side_encryption
    if spec.protection is not None:
        out["protection"] = list(spec.protection)
    if spec.encryption_context is not None:
        out["encryption_context"] = dict(spec.encryption_context)
    out["regions"] = {
        region: {k: v for k in _REGION if (v := getattr(where, k)) is not None}
        for region, where in spec.regions.items()
    }
    if spec.replication_role is not None:
        out["replication_role"] = spec.replication_role
    return out


def _roles_document(roles: RoleOutputs) -> dict[str, Any]:
    return {**{r: roles.arn(r) for r in ROLE_NAMES}, "replication": dict(roles.replication)}


# --------------------------------------------------------------------------- the parser


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Reader:
    """Field checks that name the field and the source in one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> OutputsError:
        return OutputsError(f"{self.source}: {where} {problem}; {AGAIN}")

    def obj(self, value: object, where: str, known: tuple[str, ...] | None = None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be an object, not {type(value).__name__}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(where, f"has a non-string key {_show(key)}")
            if known is not None and key not in known:
                raise self.fail(where, f"has an unknown field {_show(key)} (not in {SCHEMA})")
        return value

    def text(self, value: object, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, not {_show(value)}")
        if pattern is not None and not (value.isascii() and pattern.fullmatch(value)):
            raise self.fail(where, f"{_show(value)} is not {what}")
        return value

    def maybe_text(self, document: Mapping[str, Any], key: str, where: str) -> str | None:
        return self.text(document[key], f"{where}{key}") if key in document else None

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {_show(value)}")
        return value

    def strings(self, value: object, where: str) -> dict[str, str]:
        return {k: self.text(v, f"{where}.{k}") for k, v in self.obj(value, where).items()}

    def region(self, value: object, where: str) -> str:
        return self.text(value, where, _REGION_RE, "an AWS region name such as eu-west-3")


def _parse_region(read: _Reader, region: str, value: object, where: str) -> RegionOutputs:
    read.region(region, f"{where} key")
    spec = read.obj(value, where, _REGION)
    for required in ("key_arn", "bucket"):
        if required not in spec:
            raise read.fail(where, f"has no {required}")
    key_arn = read.text(spec["key_arn"], f"{where}.key_arn", _KEY_ARN, "a KMS key ARN")
    if key_arn.split(":")[3] != region:
        raise read.fail(f"{where}.key_arn", f"names region {key_arn.split(':')[3]}, not {region}")
    return RegionOutputs(
        key_arn=key_arn,
        bucket=read.text(spec["bucket"], f"{where}.bucket", _BUCKET, "an S3 bucket name"),
        key_id=read.maybe_text(spec, "key_id", f"{where}."),
        alias=read.maybe_text(spec, "alias", f"{where}."),
        bucket_arn=read.maybe_text(spec, "bucket_arn", f"{where}."),
    )


def _parse_class(read: _Reader, name: object, value: object, primary: str | None) -> ClassOutputs:
    where = f"classes.{str(name)[:40]}"
    problem = name_problem(name)  # the program's own rule (infra.model.data_classes)
    if problem is not None:
        raise read.fail(f"classes key {_show(name)}", f"is not a class name: {problem.split(': ', 1)[-1]}")
    spec = read.obj(value, where, _CLASS)
    if "end_to_end" not in spec or "regions" not in spec:
        raise read.fail(where, "needs end_to_end and regions")
    regions = read.obj(spec["regions"], f"{where}.regions")
    if not regions:
        raise read.fail(f"{where}.regions", "is empty")
    if primary is not None and primary not in regions:
        raise read.fail(f"{where}.regions", f"has no primary region {primary}")
    protection = spec.get("protection")
    if "protection" in spec and not (
        isinstance(protection, list) and all(isinstance(p, str) and p for p in protection)
    ):
        raise read.fail(f"{where}.protection", "must be a list of non-empty strings")
    cse, context = spec.get("client_side_encryption"), spec.get("encryption_context")
    return ClassOutputs(
        name=str(name),
        end_to_end=read.flag(spec["end_to_end"], f"{where}.end_to_end"),
        regions={
            str(r): _parse_region(read, str(r), w, f"{where}.regions.{str(r)[:20]}")
            for r, w in regions.items()
        },
        client_side_encryption=(
            read.flag(cse, f"{where}.client_side_encryption") if "client_side_encryption" in spec else None
        ),
        protection=tuple(protection or ()) if "protection" in spec else None,
        encryption_context=(
            read.strings(context, f"{where}.encryption_context") if "encryption_context" in spec else None
        ),
        replication_role=read.maybe_text(spec, "replication_role", f"{where}."),
    )


def _parse_roles(read: _Reader, value: object) -> RoleOutputs:
    roles = read.obj(value, "roles", (*ROLE_NAMES, "replication"))
    missing = [r for r in ROLE_NAMES if r not in roles]
    if missing:
        raise read.fail("roles", f"has no {', '.join(missing)}")
    arns = {r: read.text(roles[r], f"roles.{r}") for r in ROLE_NAMES}
    replication = read.strings(roles.get("replication", {}), "roles.replication")
    return RoleOutputs(**arns, replication=replication)


def _check_flat(read: _Reader, document: Mapping[str, Any], classes: Mapping[str, ClassOutputs]) -> None:
    """`<class>/<region>/<field>` keys (Pulumi's flat exports) must repeat the nested values."""
    for key, value in document.items():
        if key in _TOP:
            continue
        parts = key.split("/")
        if len(parts) != 3 or parts[2] not in FLAT_FIELDS:
            raise read.fail("the document", f"has an unknown field {_show(key)} (not in {SCHEMA})")
        name, region, what = parts
        where = classes.get(name, None)
        target = where.regions.get(region) if where is not None else None
        if target is None or getattr(target, what) != value:
            raise read.fail(f"field {_show(key)}", f"disagrees with classes.{name[:40]}.regions")


def _parse_classes(read: _Reader, value: object, primary: str | None) -> dict[str, ClassOutputs]:
    return {str(n): _parse_class(read, n, spec, primary) for n, spec in read.obj(value, "classes").items()}


def parse_classes(
    classes: object, source: str = "stack outputs", primary_region: str | None = None
) -> dict[str, ClassOutputs]:
    """The `classes` output alone, checked as :func:`parse_outputs` checks it (for callers given
    only that part, e.g. hsm_lab.datapath); with `primary_region`, every class must be there."""
    return _parse_classes(_Reader(source), classes, primary_region)


def parse_outputs(document: object, source: str = "stack outputs") -> StackOutputs:
    """Check every field of a stack-outputs document; the typed contract, or one OutputsError.

    A document without `schema` (written before v1, same fields) is read as v1 with
    ``declared=False``; any other schema is refused.
    """
    read = _Reader(source)
    if not isinstance(document, Mapping):
        raise read.fail("the document", f"must be a JSON object, not {type(document).__name__}")
    read.obj(document, "the document")
    declared = "schema" in document
    if declared and document["schema"] != SCHEMA:
        raise read.fail("schema", f"is {_show(document['schema'])}; this Clefs reads {SCHEMA} only")
    if "classes" not in document or "primary_region" not in document:
        raise read.fail("the document", "needs 'classes' and 'primary_region'")
    primary = read.region(document["primary_region"], "primary_region")
    classes = _parse_classes(read, document["classes"], primary)
    _check_flat(read, document, classes)
    present = {key: document[key] for key in _TOP if key in document}
    return StackOutputs(
        classes=classes,
        primary_region=primary,
        replica_region=_opt(present, "replica_region", read.region),
        account_id=_opt(present, "account_id", lambda v, w: read.text(v, w, _ACCOUNT, "12 digits")),
        stack=_opt(present, "stack", read.text),
        namespace=_opt(present, "namespace", read.text),
        transcript_bucket=_opt(
            present, "transcript_bucket", lambda v, w: read.text(v, w, _BUCKET, "an S3 bucket name")
        ),
        alarm_topics=_opt(present, "alarm_topics", read.strings),
        roles=_opt(present, "roles", lambda v, _w: _parse_roles(read, v)),
        declared=declared,
    )


def _opt(present: Mapping[str, Any], key: str, check: Callable[[Any, str], _T]) -> _T | None:
    """An optional top-level field: absent is None; present (even null) must pass its check."""
    return check(present[key], key) if key in present else None


def load_outputs(path: Path) -> StackOutputs:
    """Read and check a stack-outputs JSON file (OutputsError, FileNotFoundError)."""
    try:
        document = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OutputsError(f"{path} is not JSON; {AGAIN}") from None
    return parse_outputs(document, str(path))

"""Stack settings: every `clefs:*` config key, its default and its validation.

Pure Python (no pulumi import): `settings_from_config` takes a getter so it can be fed from
`pulumi.Config`, a dict in tests, or a parsed stack YAML file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

from infra.model.data_classes import DataClass, DataClassConfigError, parse_data_classes

DEFAULT_PRIMARY_REGION = "eu-west-3"  # Paris
DEFAULT_REPLICA_REGION = "eu-central-1"  # Frankfurt
DEFAULT_TRANSCRIPT_RETENTION_DAYS = 365
DEFAULT_KEY_DELETION_WINDOW_DAYS = 30
DEFAULT_NAME_PREFIX = "clefs"
ROLE_NAMES = ("admin", "app", "ceremony", "auditor")

_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:\S+$")
_PRINCIPAL_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,128}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
_STACK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
BUCKET_AUTONAME_SUFFIX = 8  # Pulumi appends "-" and 7 random characters
BUCKET_NAME_MAX = 63

KEYS = (
    "primaryRegion",
    "replicaRegion",
    "dataClasses",
    "transcriptRetentionDays",
    "keyDeletionWindowDays",
    "endpoint",
    "allowedAccountIds",
    "trustedPrincipals",
    "namePrefix",
    "deployerArn",
)
OBJECT_KEYS = frozenset({"dataClasses", "allowedAccountIds", "trustedPrincipals"})


class ConfigError(ValueError):
    """A one-line, precise error about a `clefs:*` config value."""


def class_bucket_logical_name(class_name: str, region: str, namespace: str = DEFAULT_NAME_PREFIX) -> str:
    """Logical (and autoname prefix) name of a class bucket: `<prefix>-<stack>-<class>-<region>`."""
    return f"{namespace}-{class_name}-{region}"


@dataclass(frozen=True)
class StackSettings:
    primary_region: str = DEFAULT_PRIMARY_REGION
    replica_region: str = DEFAULT_REPLICA_REGION
    data_classes: tuple[DataClass, ...] = field(default_factory=lambda: parse_data_classes(None))
    transcript_retention_days: int = DEFAULT_TRANSCRIPT_RETENTION_DAYS
    key_deletion_window_days: int = DEFAULT_KEY_DELETION_WINDOW_DAYS
    endpoint: str | None = None
    allowed_account_ids: tuple[str, ...] = ()
    trusted_principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    name_prefix: str = DEFAULT_NAME_PREFIX
    stack: str = "dev"
    deployer_arn: str | None = None  # None: the identity running `pulumi up` (its role, not its session)

    @property
    def regions(self) -> tuple[str, str]:
        return (self.primary_region, self.replica_region)

    @property
    def namespace(self) -> str:
        """`<prefix>-<stack>`: every alias, bucket and topic name carries it, so stacks do not collide."""
        return f"{self.name_prefix}-{self.stack}"

    def alias(self, data_class: str) -> str:
        return f"alias/{self.name_prefix}/{self.stack}/{data_class}"

    @property
    def localstack(self) -> bool:
        return self.endpoint is not None


def _region(key: str, raw: object | None, default: str) -> str:
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str) or not _REGION_RE.match(raw):
        raise ConfigError(f"clefs:{key}: {raw!r} is not an AWS region name such as eu-west-3")
    return raw


def _int(key: str, raw: object | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise ConfigError(f"clefs:{key}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"clefs:{key}: {value} is out of range [{low}, {high}]")
    return value


def _endpoint(raw: object | None) -> str | None:
    if raw is None or raw == "":
        return None
    parsed = urlparse(str(raw))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"clefs:endpoint: {raw!r} is not an http(s) URL such as http://127.0.0.1:4566")
    return str(raw).rstrip("/")


def _accounts(raw: object | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError("clefs:allowedAccountIds: expected a list of 12-digit account ids")
    for acct in raw:
        if not isinstance(acct, str) or not _ACCOUNT_RE.match(acct):
            raise ConfigError(f"clefs:allowedAccountIds: {acct!r} is not a 12-digit account id")
    return tuple(raw)


def _principals(raw: object | None) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "clefs:trustedPrincipals: expected a mapping of role (admin, app, ceremony) "
            "to a list of IAM principal ARNs"
        )
    out: dict[str, tuple[str, ...]] = {}
    for role, arns in raw.items():
        if role not in ROLE_NAMES:
            raise ConfigError(
                f"clefs:trustedPrincipals: unknown role {role!r} (allowed: {', '.join(ROLE_NAMES)})"
            )
        if not isinstance(arns, Sequence) or isinstance(arns, str) or not arns:
            raise ConfigError(f"clefs:trustedPrincipals.{role}: expected a non-empty list of ARNs")
        for arn in arns:
            if not isinstance(arn, str) or not _ARN_RE.match(arn):
                raise ConfigError(f"clefs:trustedPrincipals.{role}: {arn!r} is not an IAM ARN")
        out[role] = tuple(arns)
    return out


def _prefix(raw: object | None) -> str:
    if raw is None or raw == "":
        return DEFAULT_NAME_PREFIX
    if not isinstance(raw, str) or not _PREFIX_RE.match(raw):
        raise ConfigError(
            f"clefs:namePrefix: {raw!r} must be 1-16 of a-z 0-9 - starting with a letter "
            "(it goes into bucket names)"
        )
    return raw


def _deployer(raw: object | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _PRINCIPAL_ARN_RE.match(raw):
        raise ConfigError(
            f"clefs:deployerArn: {raw!r} is not an IAM role or user ARN "
            "(arn:aws:iam::<account>:role/<name>); an STS session ARN changes with every session"
        )
    return raw


def deployer_from_caller(arn: str) -> str:
    """The principal a key policy can name for the identity running `pulumi up`.

    An assumed-role session (arn:aws:sts::A:assumed-role/R/S) is named by its role
    (arn:aws:iam::A:role/R): `aws:PrincipalArn` is the role ARN for role sessions.
    """
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{role}"
    return arn


def settings_from_config(get: Callable[[str], object | None], stack: str = "dev") -> StackSettings:
    """Build validated settings; `get(key)` returns the raw value of `clefs:<key>` or None.

    Structured keys (OBJECT_KEYS) must be returned already parsed (list/dict). `stack` is the
    Pulumi stack name: it goes into every alias and bucket name.
    """
    if not _STACK_RE.match(stack):
        raise ConfigError(
            f"stack name {stack!r}: use 1-20 of a-z 0-9 - (it goes into alias and bucket names)"
        )
    prefix = _prefix(get("namePrefix"))
    primary = _region("primaryRegion", get("primaryRegion"), DEFAULT_PRIMARY_REGION)
    replica = _region("replicaRegion", get("replicaRegion"), DEFAULT_REPLICA_REGION)
    if primary == replica:
        raise ConfigError(f"clefs:replicaRegion: must differ from clefs:primaryRegion ({primary})")
    try:
        classes = parse_data_classes(get("dataClasses"))
    except DataClassConfigError as exc:
        raise ConfigError(str(exc)) from None
    for dc in classes:
        for region in (primary, replica):
            namespace = f"{prefix}-{stack}"
            longest = len(class_bucket_logical_name(dc.name, region, namespace)) + BUCKET_AUTONAME_SUFFIX
            if longest > BUCKET_NAME_MAX:
                raise ConfigError(
                    f"clefs:dataClasses: {dc.name!r} makes bucket names in {region} "
                    f"{longest} characters long with namespace {namespace!r} (S3 maximum {BUCKET_NAME_MAX}); "
                    "shorten the class, clefs:namePrefix or the stack name"
                )
    return StackSettings(
        primary_region=primary,
        replica_region=replica,
        data_classes=classes,
        transcript_retention_days=_int(
            "transcriptRetentionDays",
            get("transcriptRetentionDays"),
            DEFAULT_TRANSCRIPT_RETENTION_DAYS,
            1,
            36500,
        ),
        key_deletion_window_days=_int(
            "keyDeletionWindowDays", get("keyDeletionWindowDays"), DEFAULT_KEY_DELETION_WINDOW_DAYS, 7, 30
        ),
        endpoint=_endpoint(get("endpoint")),
        allowed_account_ids=_accounts(get("allowedAccountIds")),
        trusted_principals=_principals(get("trustedPrincipals")),
        name_prefix=prefix,
        stack=stack,
        deployer_arn=_deployer(get("deployerArn")),
    )


def settings_from_mapping(config: Mapping[str, object], stack: str = "dev") -> StackSettings:
    """Settings from a plain mapping keyed `clefs:<key>` or `<key>` (tests, tooling)."""

    def get(key: str) -> object | None:
        return config.get(f"clefs:{key}", config.get(key))

    unknown = sorted(
        k for k in config if (":" not in k or k.startswith("clefs:")) and k.removeprefix("clefs:") not in KEYS
    )
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config key (known: {', '.join(KEYS)})")
    return settings_from_config(get, stack)

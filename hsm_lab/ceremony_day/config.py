"""`clefs.toml`: a lab's settings in one file, read before flags.

    format = "clefs.config/v1"
    lab = "lab/mine"
    module = "/usr/lib/softhsm/libsofthsm2.so"
    endpoint = "https://127.0.0.1:4566"
    regions = ["eu-west-3", "eu-central-1"]
    [profiles.ci]
    lab = "lab/ci"

Precedence, highest first: flags > environment (CLEFS_LAB, CLEFS_PKCS11_MODULE,
CLEFS_LOCALSTACK_ENDPOINT, CLEFS_PROFILE) > clefs.toml (the chosen profile over the top level) >
defaults. Strict: an unknown key, a wrong type or an unknown profile is one line naming the file
and the key. The file holds no secret; a PIN in it is refused.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsm_lab import errors
from infra.model.settings import DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION

CONFIG_FORMAT = "clefs.config/v1"
CONFIG_NAME = "clefs.toml"
KEYS = {"lab": str, "module": str, "endpoint": str, "regions": list}
ENV = {"lab": "CLEFS_LAB", "module": "CLEFS_PKCS11_MODULE", "endpoint": "CLEFS_LOCALSTACK_ENDPOINT"}
DEFAULTS: dict[str, Any] = {
    "lab": "lab",
    "module": None,
    "endpoint": None,
    "regions": [DEFAULT_PRIMARY_REGION, DEFAULT_REPLICA_REGION],
}
SECRET_WORDS = ("pin", "passphrase", "password", "secret", "token_value")


@dataclass(frozen=True)
class Settings:
    lab: str
    module: str | None
    endpoint: str | None
    regions: list[str]
    profile: str | None = None
    sources: dict[str, str] = field(
        default_factory=dict
    )  # key -> "flag" | "env X" | "file:profile" | "default"


def _check_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    for key, value in table.items():
        if any(word in key.lower() for word in SECRET_WORDS):
            raise errors.InputError(f"{where}: {key!r} looks like a secret; secrets never go in clefs.toml")
        if key not in KEYS:
            raise errors.InputError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)}, profiles)")
        if not isinstance(value, KEYS[key]):
            raise errors.InputError(f"{where}: {key} must be a {KEYS[key].__name__}")
        if key == "regions" and (not value or not all(isinstance(r, str) and r for r in value)):
            raise errors.InputError(f"{where}: regions must be a non-empty list of region names")
    return table


def parse_config(text: str, source: str = CONFIG_NAME) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(top-level settings, profiles), strictly checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.InputError(f"{source}: not valid TOML ({exc})") from None
    fmt = data.pop("format", CONFIG_FORMAT)
    if fmt != CONFIG_FORMAT:
        raise errors.InputError(f"{source}: format {str(fmt)[:30]!r} is not {CONFIG_FORMAT}")
    profiles = data.pop("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise errors.InputError(f"{source}: [profiles.NAME] must be tables")
    top = _check_table(data, source)
    checked = {name: _check_table(dict(p), f"{source} [profiles.{name}]") for name, p in profiles.items()}
    return top, checked


def find_config(start: Path | None = None) -> Path | None:
    """clefs.toml in the current directory (no search upwards: what applies is where you stand)."""
    path = (start or Path.cwd()) / CONFIG_NAME
    return path if path.is_file() else None


def resolve(
    flags: dict[str, Any] | None = None,
    *,
    config: Path | None = None,
    profile: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """flags > env > clefs.toml (profile, then top level) > defaults; each value says where it came from."""
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    top: dict[str, Any] = {}
    profiles: dict[str, dict[str, Any]] = {}
    source = str(config) if config else CONFIG_NAME
    if config is not None:
        try:
            text = config.read_text()
        except OSError as exc:
            raise errors.InputError(f"cannot read {config}: {exc.strerror}") from None
        top, profiles = parse_config(text, source)
    chosen = profile or env.get("CLEFS_PROFILE") or None
    if chosen is not None and chosen not in profiles:
        raise errors.InputError(f"{source}: no profile {chosen!r} (have: {', '.join(profiles) or 'none'})")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        if key in flags:
            values[key], sources[key] = flags[key], "flag"
        elif key in ENV and env.get(ENV[key]):
            values[key], sources[key] = env[ENV[key]], f"env {ENV[key]}"
        elif chosen and key in profiles[chosen]:
            values[key], sources[key] = profiles[chosen][key], f"{source} [profiles.{chosen}]"
        elif key in top:
            values[key], sources[key] = top[key], source
        else:
            values[key], sources[key] = DEFAULTS[key], "default"
    return Settings(
        values["lab"], values["module"], values["endpoint"], list(values["regions"]), chosen, sources
    )

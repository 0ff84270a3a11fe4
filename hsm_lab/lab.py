"""A lab directory: where each artefact of the ceremony lives, and whose PINs open it.

Layout (nothing secret is ever written here; shares are age-encrypted):

    softhsm2.conf, tokens/, hsm.lock      the private SoftHSM2 store
    ceremonies/<id>/manifest.json         signed manifest of one share set
    ceremonies/<id>/shares/<name>.age     one encrypted share per custodian
    ceremonies/CURRENT                    id of the active share set
    transcript.jsonl, transcript.head.json  hash-chained log, HSM-signed head
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hsm_lab import errors
from hsm_lab.fs import atomic_write_text

LAB_ENV = "CLEFS_LAB"
PRIMARY_TOKEN = "clefs-primary"  # noqa: S105 - a token label
RECOVERY_TOKEN = "clefs-recovery"  # noqa: S105 - a token label
MASTER_LABEL = "clefs-master"


@dataclass(frozen=True)
class Lab:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None) -> Lab:
        """--lab, else $CLEFS_LAB, else `lab` in ./clefs.toml, else ./lab."""
        chosen = path or os.environ.get(LAB_ENV) or configured("lab") or "lab"
        return cls(Path(chosen).resolve())

    @property
    def ceremonies(self) -> Path:
        return self.root / "ceremonies"

    def ceremony_dir(self, ceremony_id: str) -> Path:
        return self.ceremonies / ceremony_id

    def manifest_path(self, ceremony_id: str) -> Path:
        return self.ceremony_dir(ceremony_id) / "manifest.json"

    def share_path(self, ceremony_id: str, custodian: str) -> Path:
        return self.ceremony_dir(ceremony_id) / "shares" / f"{custodian}.age"

    @property
    def transcript(self) -> Path:
        return self.root / "transcript.jsonl"

    @property
    def transcript_head(self) -> Path:
        return self.root / "transcript.head.json"

    def current_ceremony(self) -> str:
        marker = self.ceremonies / "CURRENT"
        if not marker.is_file():
            raise errors.ManifestError(f"no ceremony in lab {self.root}: run `hsm-lab generate` first")
        return marker.read_text().strip()

    def set_current_ceremony(self, ceremony_id: str) -> None:
        atomic_write_text(self.ceremonies / "CURRENT", ceremony_id + "\n")


def configured(key: str) -> str | None:
    """A value of ./clefs.toml (hsm_lab.ceremony_day.config), read after flags and environment."""
    from hsm_lab.ceremony_day.config import find_config, resolve

    found = find_config()
    if found is None:
        return None
    settings = resolve(config=found, environ={})
    return str(getattr(settings, key)) if settings.sources.get(key, "default") != "default" else None


def read_pin(kind: str, env_var: str, *, confirm: bool = False) -> str:
    """A PIN from its environment variable, else from the terminal; never echoed."""
    value = os.environ.get(env_var)
    if value:
        return value
    if not sys.stdin.isatty():
        raise errors.InputError(f"no {kind}: set {env_var} or run in a terminal to be prompted")
    first = getpass.getpass(f"{kind}: ")
    if confirm and getpass.getpass(f"{kind} again: ") != first:
        raise errors.InputError(f"the two {kind} entries differ; try again")
    return first


def user_pin(*, confirm: bool = False) -> str:
    return read_pin("user PIN", "CLEFS_USER_PIN", confirm=confirm)


def so_pin(*, confirm: bool = False) -> str:
    return read_pin("SO PIN", "CLEFS_SO_PIN", confirm=confirm)


def actor() -> str:
    """Who is acting, for the transcript (an operator name, never a secret)."""
    return os.environ.get("CLEFS_ACTOR") or os.environ.get("USER") or "operator"

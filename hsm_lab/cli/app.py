"""The one `hsm-lab` Typer app, its sub-apps, consoles and shared options (hsm_lab.cli.commands
registers the commands of hsm_lab.cli.ceremony, .transcript, .byok, .verify, .rehearse on it).

Errors are one line on stderr and a non-zero exit (the one printer is hsm_lab.cli.console); PINs
come from CLEFS_USER_PIN / CLEFS_SO_PIN or a prompt, passphrases from a prompt or
CLEFS_PASSPHRASE_<CUSTODIAN>; nothing secret is ever printed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from hsm_lab import errors
from hsm_lab.ceremony import record
from hsm_lab.cli import console
from hsm_lab.hsm import HSM, TokenSession
from hsm_lab.lab import Lab, actor, user_pin

app = console.new_app(
    "Clefs HSM lab: a 5-of-7 quorum key ceremony on any PKCS#11 HSM (SoftHSM2 by default).", completion=True
)
transcript_app = console.new_app(
    "Show or verify the hash-chained, HSM-signed transcript.", no_args_is_help=False
)
console.add_version_option(app)
app.add_typer(transcript_app, name="transcript")
byok_app = console.new_app(
    "BYOK: derive class keys in the HSM and import them into KMS (both regions).", no_args_is_help=False
)
app.add_typer(byok_app, name="byok")
# Piped or in CI, Rich would wrap the tables at 80 columns; a terminal or $COLUMNS decides otherwise.
out = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 132)
err = Console(stderr=True, highlight=False)

LabOpt = console.LabOpt
ModuleOpt = Annotated[
    str | None,
    typer.Option(
        "--module",
        envvar="CLEFS_PKCS11_MODULE",
        show_envvar=True,
        help="PKCS#11 module .so [env CLEFS_PKCS11_MODULE; default SoftHSM2].",
    ),
]
TokenOpt = Annotated[str, typer.Option("--token", help="Token label.")]
ShareOpt = Annotated[list[Path], typer.Option("--share", help="An age-encrypted share file (repeat).")]
IdentityOpt = Annotated[
    list[Path] | None, typer.Option("--identity", "-i", help="age identity file (repeat).")
]
WeakOpt = Annotated[
    bool,
    typer.Option("--allow-weak-quorum", help="Accept K < 3 or K not a majority of N (shown in output)."),
]
NoSpareOpt = Annotated[
    bool,
    typer.Option("--allow-no-spare", help="Accept K = N: one lost share loses the key (shown in output)."),
]
ExpectSignerOpt = Annotated[
    str | None,
    typer.Option(
        "--expect-signer",
        envvar="CLEFS_EXPECT_SIGNER",
        show_envvar=True,
        help="Fingerprint (hex) of the signer you witnessed; refuse anything else [env CLEFS_EXPECT_SIGNER].",
    ),
]

OutputsOpt = Annotated[
    Path | None, typer.Option("--outputs", help="Stack outputs JSON [default <lab>/stack-outputs.json].")
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="LocalStack endpoint [default: localstack-client conventions]."),
]
RealAwsOpt = Annotated[
    bool,
    typer.Option(
        "--aws",
        help="Real AWS instead of LocalStack: one profile per role, botocore's endpoints, TLS verified; "
        "any endpoint override is refused (docs/aws.md).",
    ),
]


def _profile_option(role: str, does: str) -> Any:
    from hsm_lab.aws.access import profile_env

    return typer.Option(
        f"--{role}-profile",
        envvar=profile_env(role),
        help=f"AWS profile of the {role} role ({does}); with --aws.",
    )


TrustCaOpt = Annotated[
    bool,
    typer.Option(
        "--trust-ca-bundle",
        envvar="CLEFS_TRUST_CA_BUNDLE",
        help="With --aws, trust AWS_CA_BUNDLE (a proxy of yours); refused otherwise, and shown when used.",
    ),
]
CeremonyProfileOpt = Annotated[str | None, _profile_option("ceremony", "imports key material")]
AppProfileOpt = Annotated[str | None, _profile_option("app", "uses the keys and buckets")]
AuditorProfileOpt = Annotated[str | None, _profile_option("auditor", "reads keys and configuration")]


Clients = Callable[[str, str], object]


def _warn(line: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)


def _record(where: Lab, session: TokenSession, expect: str | None = None) -> record.Record:
    """The lab's record opened on a logged-in token, its warnings printed (one line each)."""
    opened = record.Record.open(where, session, expect=expect, actor=actor())
    for line in opened.warnings:
        _warn(line)
    return opened


def _show_fingerprint(title: str, value: str) -> None:
    out.print(f"{escape(title)}: [bold]{record.grouped(value)}[/]")
    out.print(f"  read aloud: [bold]{record.fingerprint_words(value)}[/]")


def _open(lab: Path | None, module: str | None, *, create: bool = False) -> tuple[Lab, HSM]:
    """The lab and its HSM; only `init` (create=True) may make a lab that does not exist yet."""
    where = Lab.at(lab)
    if not create and not where.root.is_dir():
        raise errors.InputError(
            f"no lab at {where.root}: run `hsm-lab init` to create one there, or pass --lab / set CLEFS_LAB"
        )
    return where, HSM(where.root, module)


def _check_pin(hsm: HSM, token: str) -> str:
    """The user PIN, checked against the token before any custodian is asked for anything."""
    pin = user_pin()
    with hsm.session(token, user_pin=pin):
        pass
    return pin

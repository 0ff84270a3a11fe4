"""`init`: a token initialised (resumable), the lab's signer pinned in it, the first init recorded.

The first token of a lab pins its own signing key; a later token pins the lab's
existing pin (compare its fingerprint with the witnessed one) and may sign only
once a quorum authorises it (`import --authorise-signer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from hsm_lab import errors
from hsm_lab.ceremony.record import (
    Anchor,
    Warn,
    anchor_path,
    fingerprint,
    load_anchor,
    open_record,
    save_anchor,
    token_anchor,
    write_token_anchor,
)
from hsm_lab.fs import private_dir
from hsm_lab.hsm import HSM, TokenSession
from hsm_lab.lab import Lab


def _ignore(_line: str) -> None:
    return None


@dataclass(frozen=True)
class InitResult:
    created: bool  # False: the token was already complete, nothing changed
    token: str
    fingerprint: str  # this token's ceremony signing key
    anchor: Anchor  # the lab's pinned signer
    authorised: bool  # this token may sign the record now


def init_token(
    hsm: HSM,
    lab: Lab,
    *,
    token: str,
    so_pin: str,
    user_pin: str,
    expect_signer: str | None = None,
    actor: str = "operator",
    on_warning: Warn = _ignore,
) -> InitResult:
    """Initialise a token (resumable), pin the lab's signer in it, record the first init.

    The first token of a lab pins its own signing key; a later token pins the
    lab's existing pin (compare its fingerprint with the witnessed one) and may
    sign only once a quorum authorises it (`import --authorise-signer`).
    """
    private_dir(lab.root)
    made = hsm.init_token(token, so_pin, user_pin)
    with hsm.session(token, user_pin=user_pin) as session:
        own_key = session.signing_public_key()
        own = fingerprint(own_key)
        anchor, wrote = _pin_signer(lab, session, token, own_key, expect_signer, on_warning)
        record = open_record(lab, session, actor, on_warning)
        if record.authorised and not any(
            e["action"] == "init" and e["params"].get("token") == token for e in record.state.entries
        ):
            record.append(
                actor,
                "init",
                {
                    "token": token,
                    "module": str(hsm.module),
                    "signing_key": own,
                    "pinned_signer": anchor.fingerprint,
                },
            )
            wrote = True
        return InitResult(made or wrote, token, own, anchor, record.authorised)


def _pin_signer(
    lab: Lab,
    session: TokenSession,
    token: str,
    own_key: ec.EllipticCurvePublicKey,
    expect_signer: str | None,
    on_warning: Warn,
) -> tuple[Anchor, bool]:
    """The lab's pinned signer, pinned in this token too; True if anything was written."""
    own = fingerprint(own_key)
    anchor = load_anchor(anchor_path(lab))
    pinned = token_anchor(session)
    if anchor is None and pinned == own and lab.transcript.exists():
        anchor = Anchor.of(own_key, token)  # anchor.json lost: the token's own pin restores it
        save_anchor(lab, anchor)
        on_warning(f"restored {anchor_path(lab).name} from token {token!r}, which pins its own key")
    if anchor is None:
        return _pin_first(lab, session, token, own_key, pinned, expect_signer), True
    return anchor, _pin_lab_signer(session, token, anchor, pinned, expect_signer)


def _pin_first(
    lab: Lab,
    session: TokenSession,
    token: str,
    own_key: ec.EllipticCurvePublicKey,
    pinned: str | None,
    expect_signer: str | None,
) -> Anchor:
    """A lab without an anchor: this token's own key becomes the lab's pinned signer."""
    own = fingerprint(own_key)
    if lab.transcript.exists() and lab.transcript.stat().st_size:
        raise errors.TranscriptError(
            f"lab {lab.root} has a transcript but no {anchor_path(lab).name}: restore it from a backup"
        )
    if pinned is not None and pinned != own:
        raise errors.TranscriptError(f"token {token!r} pins another signer ({pinned[:16]}…)")
    anchor = Anchor.of(own_key, token)
    if expect_signer and not anchor.fingerprint.startswith(expect_signer):
        raise errors.TranscriptError(
            f"token {token!r} signs with {own[:16]}…, not the expected {expect_signer[:16]}…"
        )
    if pinned is None:
        write_token_anchor(session, anchor)
    save_anchor(lab, anchor)
    return anchor


def _pin_lab_signer(
    session: TokenSession, token: str, anchor: Anchor, pinned: str | None, expect_signer: str | None
) -> bool:
    """A lab with its anchor: the witnessed one, pinned in this token if not yet; True if written."""
    if expect_signer and not anchor.fingerprint.startswith(expect_signer):
        raise errors.TranscriptError(
            f"the lab pins signer {anchor.fingerprint[:16]}…, not the expected "
            f"{expect_signer[:16]}…: "
            "this is not the lab you witnessed"
        )
    if pinned is None:
        write_token_anchor(session, anchor)
        return True
    if pinned != anchor.fingerprint:
        raise errors.TranscriptError(
            f"token {token!r} pins {pinned[:16]}…, the lab pins {anchor.fingerprint[:16]}…"
        )
    return False

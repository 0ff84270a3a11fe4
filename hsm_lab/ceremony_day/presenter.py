"""The presenters' and the administrator's side of a ceremony session (the socket's clients).

A presenter opens their share at their own terminal and sends it sealed to the session's key,
after checking that key against the nonce the witnesses read (see session.py).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage

from hsm_lab import errors
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.custodians import load_identities
from hsm_lab.ceremony.jose import b64
from hsm_lab.ceremony_day.wire import (
    PROTOCOL,
    REQUEST_TIMEOUT,
    STEP_TIMEOUT,
    parse_nonce,
    peer,
    read_line,
    session_nonce,
    show_nonce,
    socket_path,
)
from hsm_lab.fs import wipe
from hsm_lab.lab import Lab


@contextlib.contextmanager
def _connect(lab: Lab, timeout: float) -> Iterator[socket.socket]:
    path = socket_path(lab)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise errors.InputError(
            f"no ceremony session is open in {lab.root} (no {path}): the ceremony administrator runs "
            "`ceremony open` first"
        ) from None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise errors.InputError(f"{path} is not a private socket of yours (0600): refusing to use it")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(str(path))
        except OSError:
            raise errors.InputError(
                f"the ceremony session at {path} is not answering (ended or killed)"
            ) from None
        _pid, uid = peer(conn)
        if uid != os.getuid():
            raise errors.InputError(f"the process behind {path} runs as uid {uid}, not you: refusing")
        yield conn
    finally:
        conn.close()


def request(lab: Lab, doc: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """One request, one reply; a reply with ok=false is raised as a one-line error."""
    with _connect(lab, timeout) as conn:
        try:
            conn.sendall(json.dumps({"v": PROTOCOL, **doc}).encode() + b"\n")
            line = read_line(conn)
        except TimeoutError:
            raise errors.InputError(f"the ceremony session did not answer within {int(timeout)} s") from None
        except OSError as exc:
            raise errors.InputError(f"the ceremony session hung up ({exc.strerror})") from None
    try:
        reply = json.loads(line)
        assert isinstance(reply, dict) and reply.get("v") == PROTOCOL
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError):
        raise errors.InputError(
            "the ceremony session's reply is not a clefs.ceremony-session/v1 line"
        ) from None
    if not reply.get("ok"):
        error = str(reply.get("error", "refused"))
        kind = errors.ShareRejected if doc.get("op") == "present" else errors.InputError
        raise kind(error)
    return reply


def hello(lab: Lab, nonce: str) -> dict[str, Any]:
    """The session's public state, after checking its key matches the nonce the witnesses read."""
    wanted = parse_nonce(nonce)
    reply = request(lab, {"op": "hello"})
    recipient = str(reply["state"].get("recipient", ""))
    actual = session_nonce(recipient)
    if not hmac.compare_digest(actual, wanted):
        raise errors.InputError(
            f"the session in {lab.root} has nonce {show_nonce(actual)}, not the {show_nonce(wanted)} you "
            "were given: it is not the session your witnesses saw; do not present to it"
        )
    state: dict[str, Any] = reply["state"]
    return state


def needs_passphrase(share_file: Path) -> bool:
    try:
        return shares.is_passphrase_sealed(share_file.read_bytes())
    except OSError as exc:
        raise errors.InputError(f"cannot read {share_file}: {exc.strerror}") from None


def present(
    lab: Lab,
    nonce: str,
    share_file: Path,
    identity_files: list[Path],
    passphrase: str | None = None,
    *,
    custodian: str | None = None,
) -> dict[str, Any]:
    """Open one's share here, seal it to the session's key, send it; returns the session's reply.

    The share's custodian is the one inside the share; `custodian`, when given, must match it.
    """
    state = hello(lab, nonce)
    label = custodian or share_file.name
    try:
        blob = share_file.read_bytes()
    except OSError as exc:
        raise errors.InputError(f"cannot read {share_file}: {exc.strerror}") from None
    identities = load_identities(identity_files)
    if shares.is_passphrase_sealed(blob):
        if not passphrase:
            raise errors.InputError(f"{share_file} is sealed with a passphrase: type it (or set it)")
        share = shares.unseal(blob, label, passphrase=passphrase)
    else:
        if not identities:
            raise errors.InputError(f"{share_file} is sealed to an age identity: pass -i IDENTITY_FILE")
        share = shares.unseal(blob, label, identities)
    payload = shares.encode_share(share)
    try:
        if custodian is not None and custodian != share.custodian:
            raise errors.ShareRejected(
                f"{custodian}: the share inside belongs to custodian {share.custodian}"
            )
        sealed = pyrage.encrypt(bytes(payload), [pyrage.x25519.Recipient.from_str(state["recipient"])])
    finally:
        wipe(payload)
        share.wipe()
    return request(
        lab,
        {"op": "present", "nonce": parse_nonce(nonce), "custodian": custodian, "sealed": b64(sealed)},
        timeout=STEP_TIMEOUT,
    )


def cancel(lab: Lab, nonce: str) -> dict[str, Any]:
    """Ask the session to wipe its shares and end."""
    hello(lab, nonce)
    return request(lab, {"op": "cancel", "nonce": parse_nonce(nonce)})


def status(lab: Lab) -> dict[str, Any]:
    state: dict[str, Any] = request(lab, {"op": "status"})["state"]
    return state

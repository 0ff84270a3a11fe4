"""The ceremony session's wire: names, nonces and the JSON-line protocol both ends speak.

Split out of session.py so the session (server) and the presenters (clients) share one
definition of the socket's place, the nonce and the line format; see session.py's docstring
for the protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.ceremony.record import grouped
from hsm_lab.lab import Lab

PROTOCOL = "clefs.ceremony-session/v1"
SESSION_DIR = "ceremony-session"
SOCKET_NAME = "session.sock"
NONCE_DOMAIN = b"clefs.ceremony-session-nonce/v1\x00"
NONCE_HEX = 20  # 80 bits: grinding an X25519 key to match is out of reach
MAX_LINE = 64 * 1024  # a sealed share is ~300 bytes
REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its line
STEP_TIMEOUT = 600.0  # seconds a presenter waits for the reply that performs the step
SUN_PATH_MAX = 107


def session_dir(lab: Lab) -> Path:
    return lab.root / SESSION_DIR


def socket_path(lab: Lab) -> Path:
    path = session_dir(lab) / SOCKET_NAME
    if len(os.fsencode(str(path))) > SUN_PATH_MAX:
        raise errors.InputError(
            f"the lab path is too long for a Unix socket ({path} is over {SUN_PATH_MAX} bytes): use a "
            "shorter --lab"
        )
    return path


def session_nonce(recipient: str) -> str:
    """The witnesses' nonce: the fingerprint of the session's ephemeral age recipient."""
    return hashlib.sha256(NONCE_DOMAIN + recipient.encode("ascii")).hexdigest()[:NONCE_HEX]


def parse_nonce(text: str) -> str:
    """A nonce as a person types it: hex, any case, spaces or dashes allowed."""
    value = re.sub(r"[\s:-]", "", text or "").lower()
    if not re.fullmatch(rf"[0-9a-f]{{{NONCE_HEX}}}", value):
        raise errors.InputError(
            f"--nonce takes the {NONCE_HEX} hex digits the ceremony session printed "
            "(spaces or dashes allowed)"
        )
    return value


def show_nonce(nonce: str) -> str:
    return grouped(nonce)


def require_lab(lab: Lab) -> None:
    """Refuse a directory that is not an initialised lab: ceremony-day commands create no lab."""
    if not (lab.root / "anchor.json").is_file():
        raise errors.InputError(
            f"{lab.root} is not an initialised Clefs lab (no anchor.json): pass --lab or set CLEFS_LAB, "
            "or run `hsm-lab init` there first"
        )


def peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connected process, from the kernel (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def read_request(conn: socket.socket) -> dict[str, Any]:
    data = read_line(conn)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise errors.InputError("a request is one JSON object on one line") from None
    if not isinstance(doc, dict):
        raise errors.InputError("a request is one JSON object on one line")
    if doc.get("v") != PROTOCOL:
        raise errors.InputError(f"protocol {str(doc.get('v'))[:40]!r} is not {PROTOCOL}")
    return doc


def read_line(conn: socket.socket) -> bytes:
    chunks = bytearray()
    while not chunks.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks += chunk
        if len(chunks) > MAX_LINE:
            raise errors.InputError(f"a line longer than {MAX_LINE} bytes was refused")
    return bytes(chunks)

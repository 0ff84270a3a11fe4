"""A ceremony session: custodians present their shares from their own terminals.

Like HashiCorp Vault's unseal flow: the ceremony administrator opens a session for
one step (import or rekey); it holds the presented shares in memory only and listens
on a Unix socket in the lab (`<lab>/ceremony-session/session.sock`, 0600 in a 0700
directory, same user only: the peer's uid is checked too). Each custodian runs
`present` at their own terminal: the share is opened there (identity file or
passphrase typed there) and sent sealed with age to the session's ephemeral X25519
key, so the plaintext share crosses no file and no socket in the clear.

The nonce the session prints for the witnesses is the fingerprint of that
ephemeral key (80 bits of SHA-256). A presenter types the nonce the witnesses
read; `present` refuses a session whose key does not match it before anything is
sent. The nonce is not a secret: it authenticates the session's key to people.

Each share is checked at once (`ceremony.Quorum`: commitment in the signed
manifest, ceremony, retired sets, duplicates); a bad share is named and refused and
counts nothing. Progress is k/K with who presented. At K valid shares the session
performs the step through `ceremony.import_master` / `ceremony.rekey` (which check
everything again under the HSM lock and record refusals in the transcript).
Cancel, the timeout (15 min by default), a signal, or the end of the step wipe the
shares and remove the socket; if the session is killed with SIGKILL, a janitor
process removes the socket (shares were only ever in the killed process's memory).

Protocol (versioned JSON lines, one request and one reply per connection):
    request  {"v": "clefs.ceremony-session/v1", "op": "hello" | "status" | "present" | "cancel", ...}
    present  + {"nonce": hex, "sealed": base64 age envelope, "custodian": name or null}
    cancel   + {"nonce": hex}
    reply    {"v": ..., "ok": bool, "error": str (when not ok), "state": {...}, "result": {...} (done)}
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

import pyrage

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.custodians import check_name
from hsm_lab.ceremony.jose import b64_decode
from hsm_lab.ceremony.record import Record, fingerprint_words, grouped
from hsm_lab.ceremony.shares import Share
from hsm_lab.ceremony_day.guard import (
    Stop,
    alive,
    harden_process,
    restore_signals,
    start_janitor,
    stop_janitor,
    trap_signals,
)
from hsm_lab.ceremony_day.plan import Outcome, StepPlan, describe, perform
from hsm_lab.ceremony_day.presenter import cancel, hello, needs_passphrase, present, request, status
from hsm_lab.ceremony_day.wire import (
    MAX_LINE,
    PROTOCOL,
    REQUEST_TIMEOUT,
    parse_nonce,
    peer,
    read_request,
    require_lab,
    session_nonce,
    show_nonce,
    socket_path,
)
from hsm_lab.fs import wipe
from hsm_lab.hsm import HSM
from hsm_lab.lab import Lab

__all__ = [  # the presenters' side and the wire are re-exported: callers import them from here
    "PROTOCOL",
    "CeremonySession",
    "Outcome",
    "StepPlan",
    "cancel",
    "hello",
    "needs_passphrase",
    "parse_nonce",
    "present",
    "request",
    "require_lab",
    "status",
]

DEFAULT_TIMEOUT = 15 * 60  # seconds

Say = Callable[[str], None]


def _ignore(_line: str) -> None:
    return None


# -- the step the session performs ---------------------------------------------------


# -- the session -----------------------------------------------------------------------


class CeremonySession:
    """One step, K shares in memory, one socket; `serve` returns how it ended."""

    def __init__(
        self, lab: Lab, hsm: HSM, plan: StepPlan, *, timeout: float = DEFAULT_TIMEOUT, say: Say = _ignore
    ) -> None:
        require_lab(lab)
        self.lab, self.hsm, self.plan, self.timeout, self.say = lab, hsm, plan, timeout, say
        self.path = socket_path(lab)
        self._identity = pyrage.x25519.Identity.generate()  # ephemeral: this process's memory only
        self.recipient = str(self._identity.to_public())
        self.nonce = session_nonce(self.recipient)
        self.quorum: ceremony.Quorum | None = None
        self.refused: list[dict[str, str]] = []
        self.presenters: list[str] = []  # who presented, with their pid, in order
        self.deadline = 0.0
        self.outcome: Outcome | None = None

    # preparation: everything checkable before anyone presents
    def prepare(self) -> ceremony.SignedManifest:
        """Open the verified record with the PIN now (a wrong PIN fails before any custodian acts)."""
        plan = self.plan
        if plan.step == "rekey":
            ceremony.quorum_weaknesses(
                plan.threshold, len(plan.custodians), plan.allow_weak, plan.allow_no_spare
            )
            ceremony.check_custodians(plan.custodians, plan.passphrases)
        with self.hsm.session(plan.token, user_pin=plan.user_pin) as session:
            record = Record.open(self.lab, session, expect=plan.expect_signer, actor=plan.actor)
            for line in record.warnings:
                self.say(f"warning: {line}")
            manifest = record.state.manifest()
            retired = dict(record.state.retired)
            if plan.step == "import":
                ceremony.check_expectations(
                    manifest, plan.expect_kcv, plan.expect_signer, plan.expect_ceremony
                )
                if session.find_secret_key(manifest.key_label) is not None:
                    raise errors.KeyLabelExists(
                        f"token {plan.token!r} already holds a key labelled {manifest.key_label!r}; an "
                        "import session needs a token without it"
                    )
                if not record.authorised and not plan.authorise_signer:
                    raise errors.TranscriptError(
                        f"token {plan.token!r} is not an authorised signer of this lab: pass "
                        "--authorise-signer to let this quorum authorise it"
                    )
            else:
                record.require_signer()
        self.quorum = ceremony.Quorum(manifest, retired)
        return manifest

    def state(self) -> dict[str, Any]:
        """What anyone on the socket may know: no share, no secret."""
        assert self.quorum is not None
        manifest = self.quorum.manifest
        return {
            "step": self.plan.step,
            "token": self.plan.token,
            "ceremony_id": manifest.ceremony_id,
            "threshold": manifest.threshold,
            "shares": manifest.share_count,
            "kcv": manifest.kcv,
            "signer": manifest.signer_fingerprint,
            "recipient": self.recipient,
            "accepted": len(self.quorum.accepted),
            "presented": [s.custodian for s in self.quorum.accepted],
            "refused": len(self.refused),
            "expires_in": max(0, round(self.deadline - time.monotonic())),
        }

    def banner(self) -> list[str]:
        assert self.quorum is not None
        manifest = self.quorum.manifest
        return [
            f"ceremony session for step {self.plan.step} on token {self.plan.token} (protocol {PROTOCOL})",
            f"current share set: {ceremony.describe_manifest(manifest)}",
            f"signer: {grouped(manifest.signer_fingerprint)}",
            f"  read aloud: {fingerprint_words(manifest.signer_fingerprint)}",
            f"nonce: {show_nonce(self.nonce)}",
            f"  read aloud: {fingerprint_words(self.nonce, 7)}",
            f"socket: {self.path}",
            f"waiting for {manifest.threshold} of {manifest.share_count} custodians; "
            f"times out in {int(self.timeout)} s; each runs: present --nonce {self.nonce} --share FILE",
        ]

    # the socket
    def _bind(self) -> socket.socket:
        directory = self.path.parent
        directory.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise errors.InputError(f"{directory} is not a directory owned by you; remove it and retry")
        os.chmod(directory, 0o700)
        if self.path.exists() or self.path.is_symlink():
            if alive(self.path):
                raise errors.InputError(
                    f"a ceremony session is already open in {self.lab.root} ({self.path}); cancel it "
                    "(`ceremony cancel --nonce N`) or wait for it to end"
                )
            self.path.unlink()  # a dead session's socket
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            server.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.listen(8)
        return server

    def serve(self) -> Outcome:
        """Listen until K valid shares (then perform the step), cancel, timeout or a signal."""
        if self.quorum is None:
            self.prepare()
        harden_process()
        self.deadline = time.monotonic() + self.timeout
        server = self._bind()
        inode = os.lstat(self.path).st_ino
        janitor = start_janitor(self.path, inode)
        previous = trap_signals()
        try:
            for line in self.banner():
                self.say(line)
            while self.outcome is None:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self._end("timeout", f"timed out after {int(self.timeout)} s")
                    break
                server.settimeout(min(remaining, 0.5))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._handle(conn)
        except Stop:
            self._end("stopped", "stopped by a signal")
        finally:
            self._wipe()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(self.path).st_ino == inode:
                    self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()
            stop_janitor(janitor)
            restore_signals(previous)
        assert self.outcome is not None
        self.say(f"session {self.outcome.status}: {self.outcome.detail}")
        return self.outcome

    def _end(self, status: str, detail: str, result: dict[str, Any] | None = None) -> None:
        presented = [s.custodian for s in self.quorum.accepted] if self.quorum else []
        if status != "done" and presented:
            detail += f"; {len(presented)} presented share(s) wiped ({', '.join(presented)})"
        self.outcome = Outcome(status, detail, presented, result)

    def _wipe(self) -> None:
        if self.quorum is not None:
            self.quorum.wipe()
        self._identity = None  # pyrage keeps it in Rust memory until freed

    # one connection
    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            pid, uid = peer(conn)
            if uid != os.getuid():
                self._reply(conn, error=f"uid {uid} may not talk to this session")
                return
            request = read_request(conn)
            op = request.get("op")
            if op in ("hello", "status"):
                self._reply(conn)
            elif op == "cancel":
                self._check_nonce(request)
                self._end("cancelled", f"cancelled by pid {pid}")
                self._reply(conn)
            elif op == "present":
                self._check_nonce(request)
                self._present(conn, request, pid)
            else:
                raise errors.InputError(f"unknown operation {str(op)[:20]!r}")
        except errors.ClefsError as exc:
            with contextlib.suppress(OSError):
                self._reply(conn, error=str(exc))
        except OSError:
            return  # the presenter went away; nothing was accepted from it

    def _check_nonce(self, request: dict[str, Any]) -> None:
        given = request.get("nonce")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.nonce.encode()):
            raise errors.InputError(
                "wrong nonce: this is not the ceremony session your witnesses saw; nothing was taken"
            )

    def _present(self, conn: socket.socket, request: dict[str, Any], pid: int) -> None:
        assert self.quorum is not None
        claimed = request.get("custodian")
        if claimed is not None:
            claimed = check_name(claimed)
        who = claimed or f"presenter pid {pid}"
        sealed = request.get("sealed")
        if not isinstance(sealed, str) or len(sealed) > MAX_LINE:
            raise errors.InputError("a present request carries one sealed share (base64)")
        share = None
        try:
            share = _open_sealed(self._identity, sealed, who)
            self.quorum.present(share, claimed)
        except errors.ShareRejected as exc:
            if share is not None:
                share.wipe()
            name = claimed or (share.custodian if share is not None else "unknown")
            self.refused.append({"custodian": name, "reason": str(exc)})
            self.say(f"  refused (pid {pid}): {exc}")
            self._reply(conn, error=str(exc))
            return
        manifest = self.quorum.manifest
        self.presenters.append(f"{share.custodian} (pid {pid})")
        self.say(
            f"  {share.custodian} presented (pid {pid}): {len(self.quorum.accepted)}/{manifest.threshold}"
            f" [{', '.join(s.custodian for s in self.quorum.accepted)}]"
        )
        if not self.quorum.complete:
            self._reply(conn)
            return
        self.say(f"  {manifest.threshold}/{manifest.threshold}: performing {self.plan.step}")
        try:
            result = self._perform()
        except errors.ClefsError as exc:
            self._end("failed", f"{self.plan.step} failed: {exc}")
            self._reply(conn, error=f"{self.plan.step} failed: {exc}")
            return
        self._end("done", describe(result), result)
        self._reply(conn, result=result)

    def _perform(self) -> dict[str, Any]:
        """Run the step with the accepted shares (copies, wiped by the step); refusals are recorded."""
        assert self.quorum is not None
        return perform(self.hsm, self.lab, self.plan, self.refused, self.quorum.accepted, self.say)

    def _reply(
        self, conn: socket.socket, *, error: str | None = None, result: dict[str, Any] | None = None
    ) -> None:
        doc: dict[str, Any] = {"v": PROTOCOL, "ok": error is None, "state": self.state()}
        if error is not None:
            doc["error"] = error
        if result is not None:
            doc["result"] = result
        conn.sendall(json.dumps(doc).encode() + b"\n")


def _open_sealed(identity: pyrage.x25519.Identity, sealed: str, who: str) -> Share:
    try:
        payload = bytearray(pyrage.decrypt(b64_decode(sealed), [identity]))
    except Exception:
        raise errors.ShareRejected(
            f"{who}: the share was not sealed to this session's key (wrong session, or altered)"
        ) from None
    try:
        return shares.parse_share(bytes(payload), who)
    finally:
        wipe(payload)

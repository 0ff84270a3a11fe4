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
import ctypes
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pyrage

from hsm_lab import ceremony, errors, shares
from hsm_lab.ceremony.jose import b64, b64_decode
from hsm_lab.custodians import Custodian, check_name, load_identities
from hsm_lab.fs import wipe
from hsm_lab.hsm import HSM
from hsm_lab.lab import Lab
from hsm_lab.record import Record, fingerprint_words, grouped
from hsm_lab.shares import Share

PROTOCOL = "clefs.ceremony-session/v1"
SESSION_DIR = "ceremony-session"
SOCKET_NAME = "session.sock"
DEFAULT_TIMEOUT = 15 * 60  # seconds
NONCE_DOMAIN = b"clefs.ceremony-session-nonce/v1\x00"
NONCE_HEX = 20  # 80 bits: grinding an X25519 key to match is out of reach
MAX_LINE = 64 * 1024  # a sealed share is ~300 bytes
REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its line
STEP_TIMEOUT = 600.0  # seconds a presenter waits for the reply that performs the step
SUN_PATH_MAX = 107
STEPS = ("import", "rekey")

Say = Callable[[str], None]


def _ignore(_line: str) -> None:
    return None


# -- names and nonces ----------------------------------------------------------------


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


# -- the step the session performs ---------------------------------------------------


@dataclass
class StepPlan:
    """Everything `import_master` / `rekey` need except the shares (no secret but the PIN)."""

    step: str
    token: str
    user_pin: str = field(repr=False)
    actor: str = "operator"
    authorise_signer: bool = False
    expect_kcv: str | None = None
    expect_signer: str | None = None
    expect_ceremony: str | None = None
    custodians: list[Custodian] = field(default_factory=list)
    threshold: int = 5
    passphrases: dict[str, str] = field(default_factory=dict, repr=False)
    allow_weak: bool = False
    allow_no_spare: bool = False

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise errors.InputError(f"--step {self.step!r}: a session performs import or rekey")
        if self.step == "rekey" and not self.custodians:
            raise errors.InputError("--step rekey needs --custodians (the NEW custodian file)")
        if self.step == "import" and self.custodians:
            raise errors.InputError("--custodians is for --step rekey; an import keeps the share set")


@dataclass
class Outcome:
    """How a session ended: done (with the step's result), cancelled, timeout, stopped or failed."""

    status: str
    detail: str
    presented: list[str]
    result: dict[str, Any] | None = None


class _Stop(BaseException):
    """A signal asked the session to stop: wipe and leave."""


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
            if _alive(self.path):
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
        _harden_process()
        self.deadline = time.monotonic() + self.timeout
        server = self._bind()
        inode = os.lstat(self.path).st_ino
        janitor = _start_janitor(self.path, inode)
        previous = _trap_signals()
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
        except _Stop:
            self._end("stopped", "stopped by a signal")
        finally:
            self._wipe()
            server.close()
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(self.path).st_ino == inode:
                    self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()
            _stop_janitor(janitor)
            _restore_signals(previous)
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
            pid, uid = _peer(conn)
            if uid != os.getuid():
                self._reply(conn, error=f"uid {uid} may not talk to this session")
                return
            request = _read_request(conn)
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
        self._end("done", _describe(result), result)
        self._reply(conn, result=result)

    def _perform(self) -> dict[str, Any]:
        """Run the step with the accepted shares (copies, wiped by the step); refusals are recorded."""
        assert self.quorum is not None
        plan = self.plan
        sources: list[tuple[str, ceremony.ShareSource]] = [
            (r["custodian"], _refusal(r["reason"])) for r in self.refused
        ]
        sources += [(s.custodian, _copy(s)) for s in self.quorum.accepted]

        def event(who: str, what: str) -> None:
            if who != "manifest" and not what.startswith("refused"):
                self.say(f"    {who}: {what}")

        if plan.step == "import":
            manifest, used, kcv = ceremony.import_master(
                self.hsm,
                self.lab,
                token=plan.token,
                user_pin=plan.user_pin,
                sources=sources,
                actor=plan.actor,
                on_event=event,
                on_warning=lambda line: self.say(f"warning: {line}"),
                authorise_signer=plan.authorise_signer,
                expect_kcv=plan.expect_kcv,
                expect_signer=plan.expect_signer,
                expect_ceremony=plan.expect_ceremony,
            )
            return {
                "step": "import",
                "token": plan.token,
                "ceremony_id": manifest.ceremony_id,
                "key_label": manifest.key_label,
                "kcv": kcv,
                "manifest_kcv": manifest.kcv,
                "custodians": used,
            }
        old, new, used = ceremony.rekey(
            self.hsm,
            self.lab,
            token=plan.token,
            user_pin=plan.user_pin,
            sources=sources,
            custodians=plan.custodians,
            threshold=plan.threshold,
            passphrases=plan.passphrases,
            allow_weak=plan.allow_weak,
            allow_no_spare=plan.allow_no_spare,
            actor=plan.actor,
            on_event=event,
            on_warning=lambda line: self.say(f"warning: {line}"),
        )
        return {
            "step": "rekey",
            "token": plan.token,
            "old_ceremony_id": old.ceremony_id,
            "ceremony_id": new.ceremony_id,
            "kcv": new.kcv,
            "threshold": new.threshold,
            "shares": new.share_count,
            "custodians": used,
        }

    def _reply(
        self, conn: socket.socket, *, error: str | None = None, result: dict[str, Any] | None = None
    ) -> None:
        doc: dict[str, Any] = {"v": PROTOCOL, "ok": error is None, "state": self.state()}
        if error is not None:
            doc["error"] = error
        if result is not None:
            doc["result"] = result
        conn.sendall(json.dumps(doc).encode() + b"\n")


def _describe(result: dict[str, Any]) -> str:
    if result["step"] == "import":
        return (
            f"master key {result['key_label']} imported into {result['token']} from "
            f"{', '.join(result['custodians'])}; HSM KCV {result['kcv']} = manifest KCV "
            f"{result['manifest_kcv']}"
        )
    return (
        f"new share set {result['ceremony_id']} ({result['threshold']}-of-{result['shares']}, KCV "
        f"{result['kcv']}) dealt with the quorum {', '.join(result['custodians'])}; "
        f"{result['old_ceremony_id']} retired"
    )


def _copy(share: Share) -> ceremony.ShareSource:
    return lambda: Share(share.ceremony_id, share.custodian, bytearray(share.value))


def _refusal(reason: str) -> ceremony.ShareSource:
    def refuse() -> Share:
        raise errors.ShareRejected(reason)

    return refuse


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


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connected process, from the kernel (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = _read_line(conn)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise errors.InputError("a request is one JSON object on one line") from None
    if not isinstance(doc, dict):
        raise errors.InputError("a request is one JSON object on one line")
    if doc.get("v") != PROTOCOL:
        raise errors.InputError(f"protocol {str(doc.get('v'))[:40]!r} is not {PROTOCOL}")
    return doc


def _read_line(conn: socket.socket) -> bytes:
    chunks = bytearray()
    while not chunks.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks += chunk
        if len(chunks) > MAX_LINE:
            raise errors.InputError(f"a line longer than {MAX_LINE} bytes was refused")
    return bytes(chunks)


def _alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _harden_process() -> None:
    """No core dump and no ptrace by other processes of the same user (best effort, Linux)."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


JANITOR = """
import os, sys
path, inode = sys.argv[1], int(sys.argv[2])
sys.stdin.buffer.read()  # returns when the session closes the pipe or dies (even SIGKILL)
try:
    if os.lstat(path).st_ino == inode:
        os.unlink(path)
except FileNotFoundError:
    pass
try:
    os.rmdir(os.path.dirname(path))
except OSError:
    pass
"""


def _start_janitor(path: Path, inode: int) -> subprocess.Popen[bytes] | None:
    """A tiny process that removes the socket when the session dies, however it dies."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-c", JANITOR, str(path), str(inode)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the session's terminal does not reach it
            env={},
        )
    except OSError:
        return None


def _stop_janitor(janitor: subprocess.Popen[bytes] | None) -> None:
    if janitor is None:
        return
    with contextlib.suppress(OSError):
        assert janitor.stdin is not None
        janitor.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        janitor.wait(timeout=5)


Handler = Callable[[int, FrameType | None], Any] | int | None


def _trap_signals() -> dict[int, Handler]:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    previous: dict[int, Handler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, stop)
    return previous


def _restore_signals(previous: dict[int, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# -- presenters and the administrator -------------------------------------------------


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
        _pid, uid = _peer(conn)
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
            line = _read_line(conn)
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

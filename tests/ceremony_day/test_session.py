"""The ceremony session: one real session process, several real presenter processes, real SoftHSM2.

Nothing is mocked: shares are sealed with age, checked against the signed manifest, and the
step runs through `ceremony.import_master` / `ceremony.rekey` on the lab's SoftHSM2 tokens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from hsm_lab import ceremony, errors
from hsm_lab.ceremony.jose import b64
from hsm_lab.ceremony.record import verify_lab
from hsm_lab.ceremony_day import session as day_session
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN
from tests.ceremony_day.conftest import REPO, day_cmd, day_env, run_day
from tests.conftest import NAMES, PASSPHRASE_CUSTODIAN, Dealt, deal, make_lab


class Running:
    """A `ceremony open` process and what it printed so far."""

    def __init__(self, proc: subprocess.Popen[str], lab: Path) -> None:
        self.proc, self.lab, self.lines = proc, lab, []
        self.nonce = ""

    def read_until(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "\n".join(self.lines) + out, err


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_sessions() -> Iterator[None]:
    """A test that fails half-way must not leave a session process running (stop what you start)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def open_session(dealt: Dealt, *args: str) -> Running:
    lab = dealt.env.lab.root
    proc = subprocess.Popen(
        day_cmd("ceremony", "open", *args),
        env=day_env(lab, dealt.env.pin),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _STARTED.append(proc)
    running = Running(proc, lab)
    line = running.read_until(r"^nonce: ")
    running.nonce = line.split(":", 1)[1].strip()
    running.read_until(r"^waiting for ")
    assert (lab / "ceremony-session" / "session.sock").exists()
    return running


def identity_file(dealt: Dealt, name: str, where: Path) -> Path:
    path = where / f"{name}.key"
    path.write_text(str(dealt.identities[name]) + "\n")
    path.chmod(0o600)
    return path


def share_file(dealt: Dealt, name: str, where: Path) -> Path:
    path = where / f"{name}-share.age"  # a file name that says nothing reliable about the holder
    path.write_bytes(dealt.sealed(name))
    return path


def presenter(
    dealt: Dealt, name: str, nonce: str, where: Path, typed: str | None = None
) -> subprocess.Popen[str]:
    args = ["present", "--nonce", typed or nonce, "--share", str(share_file(dealt, name, where))]
    extra = {}
    if name == PASSPHRASE_CUSTODIAN:
        args += ["--custodian", name]
        extra[f"CLEFS_PASSPHRASE_{name.upper()}"] = dealt.passphrase
    else:
        args += ["-i", str(identity_file(dealt, name, where))]
    return subprocess.Popen(
        day_cmd(*args),
        env=day_env(dealt.env.lab.root, None, extra),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def done(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def secrets_on_disk(dealt: Dealt, roots: list[Path]) -> list[str]:
    """Every file under `roots` that holds a plaintext share in any encoding we use."""
    needles = []
    for share in dealt.opened.values():
        value = bytes(share.value)
        needles += [value, b64(value).encode(), value.hex().encode()]
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [str(path) for n in needles if n in data]
    return found


def master_on(dealt: Dealt, token: str) -> bool:
    with dealt.env.hsm.session(token, user_pin=dealt.env.pin) as session:
        return session.find_secret_key(MASTER_LABEL) is not None


@pytest.fixture
def dealt_lab(tmp_path: Path) -> Dealt:
    return deal(make_lab(tmp_path / "lab"))


def test_custodians_at_their_own_terminals_import_into_a_new_hsm(dealt_lab: Dealt, tmp_path: Path) -> None:
    dealt = dealt_lab
    token = dealt.env.new_token("recovery")
    running = open_session(
        dealt, "--step", "import", "--token", token, "--authorise-signer", "--expect-kcv", dealt.manifest.kcv
    )
    where = tmp_path / "desk"
    where.mkdir(mode=0o700)

    wrong = done(presenter(dealt, "alice", running.nonce, where, typed="0" * 20))
    assert wrong[0] != 0 and "not the session your witnesses saw" in wrong[2]
    assert len(wrong[2].strip().splitlines()) == 1

    first = [presenter(dealt, n, running.nonce, where) for n in ("alice", "carol")]  # at once
    for proc in first:
        code, out, err = done(proc)
        assert code == 0, err
        assert re.search(r"accepted: [12]/5", out)
    again = done(presenter(dealt, "alice", running.nonce, where))
    assert again[0] != 0 and "alice: share already presented" in again[2]
    for name in (PASSPHRASE_CUSTODIAN, "dave"):
        code, out, err = done(presenter(dealt, name, running.nonce, where))
        assert code == 0, err
    code, out, err = done(presenter(dealt, "erin", running.nonce, where))
    assert code == 0, err
    assert "accepted: 5/5" in out and f"import performed: KCV {dealt.manifest.kcv}" in out

    code, text, err = running.finish()
    assert code == 0, err
    for k in range(1, 6):
        assert f"{k}/5" in text
    assert "bob presented" in text and "refused" in text and "session done" in text
    assert master_on(dealt, token)
    entry = verify_lab(dealt.env.lab).entries[-1]
    assert entry["action"] == "import" and entry["params"]["token"] == token
    assert sorted(entry["params"]["custodians"]) == ["alice", "bob", "carol", "dave", "erin"]
    assert any("already presented" in r["reason"] for r in entry["params"]["refused"])
    assert not (dealt.env.lab.root / "ceremony-session").exists()
    assert secrets_on_disk(dealt, [dealt.env.lab.root, tmp_path]) == []


def test_a_killed_session_leaves_no_socket_no_share_and_no_key(dealt_lab: Dealt, tmp_path: Path) -> None:
    dealt = dealt_lab
    token = dealt.env.new_token("recovery")
    running = open_session(dealt, "--step", "import", "--token", token, "--authorise-signer")
    where = tmp_path / "desk"
    where.mkdir(mode=0o700)
    for name in ("alice", "bob", "carol"):
        assert done(presenter(dealt, name, running.nonce, where))[0] == 0
    running.proc.send_signal(signal.SIGKILL)
    running.proc.wait(timeout=30)
    directory = dealt.env.lab.root / "ceremony-session"
    deadline = time.monotonic() + 10
    while directory.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not directory.exists(), "the janitor did not remove the dead session's socket"
    assert not master_on(dealt, token)
    assert secrets_on_disk(dealt, [dealt.env.lab.root, tmp_path]) == []
    assert not list(Path(REPO).glob("core*")) and not list(dealt.env.lab.root.rglob("core*"))
    late = done(presenter(dealt, "dave", running.nonce, where))
    assert late[0] != 0 and "no ceremony session is open" in late[2]
    # the record never saw the session: nothing to roll back, the chain verifies
    assert not [e for e in verify_lab(dealt.env.lab).entries if e["action"].startswith("import")]


def test_cancel_and_sigterm_wipe_and_end(dealt_lab: Dealt, tmp_path: Path) -> None:
    dealt = dealt_lab
    token = dealt.env.new_token("recovery")
    where = tmp_path / "desk"
    where.mkdir(mode=0o700)
    running = open_session(dealt, "--step", "import", "--token", token, "--authorise-signer")
    assert done(presenter(dealt, "alice", running.nonce, where))[0] == 0
    status = run_day("ceremony", "status", lab=dealt.env.lab.root)
    assert status.returncode == 0 and "1/5 [alice]" in status.stdout
    wrong = run_day("ceremony", "cancel", "--nonce", "1" * 20, lab=dealt.env.lab.root)
    assert wrong.returncode != 0 and "not the session" in wrong.stderr
    cancelled = run_day("ceremony", "cancel", "--nonce", running.nonce, lab=dealt.env.lab.root)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "1 presented share(s) wiped" in cancelled.stdout
    code, text, err = running.finish()
    assert code == 1 and "cancelled" in text and "no import was performed" in err
    assert len(err.strip().splitlines()) == 1

    running = open_session(dealt, "--step", "import", "--token", token, "--authorise-signer")
    assert done(presenter(dealt, "carol", running.nonce, where))[0] == 0
    running.proc.send_signal(signal.SIGTERM)
    code, text, err = running.finish()
    assert code == 1 and "session stopped" in text and "(carol)" in text
    assert not (dealt.env.lab.root / "ceremony-session").exists()
    assert not master_on(dealt, token)


def test_the_session_times_out_and_wipes(dealt_lab: Dealt, tmp_path: Path) -> None:
    dealt = dealt_lab
    token = dealt.env.new_token("recovery")
    where = tmp_path / "desk"
    where.mkdir(mode=0o700)
    started = time.monotonic()
    running = open_session(
        dealt, "--step", "import", "--token", token, "--authorise-signer", "--timeout", "10"
    )
    assert done(presenter(dealt, "alice", running.nonce, where))[0] == 0
    code, text, _err = running.finish(timeout=60)
    assert code == 1 and "session timeout: timed out after 10 s" in text and "(alice)" in text
    assert 9 < time.monotonic() - started < 40
    assert not (dealt.env.lab.root / "ceremony-session").exists()
    assert not master_on(dealt, token)


def test_a_rekey_session_deals_a_new_set(dealt_lab: Dealt, tmp_path: Path) -> None:
    dealt = dealt_lab
    where = tmp_path / "desk"
    where.mkdir(mode=0o700)
    newcomers = {n: pyrage.x25519.Identity.generate() for n in ("hugo", "ines", "jules")}
    toml = "".join(
        f'[[custodian]]\nname = "{n}"\nrecipient = "{i.to_public()}"\n\n' for n, i in newcomers.items()
    )
    custodians = tmp_path / "new.toml"
    custodians.write_text(toml)
    running = open_session(
        dealt, "--step", "rekey", "--custodians", str(custodians), "-k", "2", "--allow-weak-quorum"
    )
    for name in NAMES[2:7]:
        code, _out, err = done(presenter(dealt, name, running.nonce, where))
        assert code == 0, err
    code, text, err = running.finish()
    assert code == 0, err
    state = verify_lab(dealt.env.lab)
    assert state.current != dealt.manifest.ceremony_id
    assert dealt.manifest.ceremony_id in state.retired
    assert state.manifest().threshold == 2 and set(state.manifest().custodians) == set(newcomers)
    assert state.manifest().kcv == dealt.manifest.kcv
    assert f"{state.current}" in text


def test_a_share_not_sealed_to_the_session_or_from_another_protocol_is_refused(
    dealt_lab: Dealt, tmp_path: Path
) -> None:
    """A raw socket client: the session names the problem and counts nothing."""
    dealt = dealt_lab
    token = dealt.env.new_token("recovery")
    running = open_session(dealt, "--step", "import", "--token", token, "--authorise-signer")
    lab = dealt.env.lab
    nonce = day_session.parse_nonce(running.nonce)
    stranger = pyrage.x25519.Identity.generate().to_public()
    payload = bytes(ceremony.shares.encode_share(dealt.share("alice")))
    with pytest.raises(errors.ShareRejected, match="not sealed to this session"):
        day_session.request(
            lab, {"op": "present", "nonce": nonce, "sealed": b64(pyrage.encrypt(payload, [stranger]))}
        )
    with pytest.raises(errors.InputError, match="protocol"):
        day_session.request(lab, {"op": "hello", "v": "clefs.ceremony-session/v0"})
    assert day_session.status(lab)["accepted"] == 0
    assert day_session.status(lab)["refused"] == 1
    info = os.stat(lab.root / "ceremony-session" / "session.sock")
    assert oct(info.st_mode & 0o777) == "0o600"
    assert oct(os.stat(lab.root / "ceremony-session").st_mode & 0o777) == "0o700"
    second = subprocess.run(
        day_cmd("ceremony", "open", "--step", "import", "--token", token, "--authorise-signer"),
        env=day_env(lab.root, dealt.env.pin),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0 and "already open" in second.stderr
    day_session.cancel(lab, nonce)
    assert running.finish()[0] == 1


def test_no_lab_no_session_and_nothing_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_day("ceremony", "open", "--step", "import", lab=missing, pin="123456")
    assert result.returncode != 0 and "not an initialised Clefs lab" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not missing.exists()
    bad_step = run_day("ceremony", "open", "--step", "generate", lab=missing, pin="123456")
    assert bad_step.returncode != 0 and "import or rekey" in bad_step.stderr


def test_protocol_doc_is_versioned() -> None:
    assert day_session.PROTOCOL == "clefs.ceremony-session/v1"
    assert json.loads(json.dumps({"v": day_session.PROTOCOL}))["v"].endswith("/v1")
    assert PRIMARY_TOKEN  # the default target, as for `hsm-lab import`

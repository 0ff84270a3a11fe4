"""Hostile values in every kind of option and file: one line on stderr, exit 1 or 2, no traceback.

Rich reads `[...]` as markup; a value such as `[/x]` in a label, a class, a path or a file's
content used to crash the printer. The values below go through `main()` (the console entry point)
with a lab of their own and an unreachable LocalStack, so every command fails fast and for real.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm_lab.cli import main
from tests.support import free_port

HOSTILE = st.one_of(
    st.sampled_from(
        [
            "[/x]",
            "[red]",
            "[bold red]x[/]",
            "[/]",
            "\udcff\udcfe not utf-8",  # what Python makes of undecodable argv bytes
            "x" * 2000,
            "a\x00b\x1b[31mc\r\nd\te",
            "\x07[link=file:///etc/passwd]x[/link]",
        ]
    ),
    st.text(alphabet="[]/\\ ab\x1b\x07\n", min_size=1, max_size=40),
)
HOSTILE_BYTES = st.one_of(
    HOSTILE.map(lambda s: s.encode("utf-8", "surrogateescape")),
    st.sampled_from([b"\xff\xfe\x00[/x]", b'[[custodian]]\nname = "[/x]"\nrecipient = "[red]"\n']),
)

V, F = "{value}", "{file}"
COMMANDS = [
    ["status", "--token", V],
    ["generate", "--custodians", F],
    ["generate", "--custodians", V],
    ["generate", "--custodians", F, "-k", V],
    ["import", "--share", F, "--token", V],
    ["verify-share", "--share", F, "-i", F],
    ["rekey", "--share", F, "--custodians", F],
    ["transcript", "verify", "--expect-signer", V],
    ["transcript", "verify", "--bundle", V],
    ["transcript", "export", V],
    ["byok", "import", "--class", V],
    ["byok", "revoke", "--class", V, "--region", V],
    ["data", "put", "--class", V, "--id", V, "--file", F],
    ["data", "get", "--class", "appointments", "--id", V, "--outputs", F],
    ["data", "replicate", "--class", V, "--outputs", V],
    ["verify", "--outputs", F],
    ["localstack", "logs", "--lab", V],
    ["stack", "apply-localstack", "--endpoint", V],
    [V],
]


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("CLEFS_", "AWS_", "LOCALSTACK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLEFS_LAB", str(tmp_path / "lab"))
    monkeypatch.setenv("CLEFS_USER_PIN", "user-pin-1234")
    monkeypatch.setenv("CLEFS_SO_PIN", "so-pin-123456")
    monkeypatch.setenv("CLEFS_LOCALSTACK_ENDPOINT", _unreachable())
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # nothing to prompt from
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        old = sys.argv
        sys.argv = ["hsm-lab", *argv]
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.argv = old
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("template", COMMANDS, ids=lambda t: " ".join(t))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE, content=HOSTILE_BYTES)
def test_hostile_values_give_one_line(sandbox: Path, template: list[str], value: str, content: bytes) -> None:
    file = sandbox / "input.txt"
    file.write_bytes(content)
    argv = [part.replace(V, value).replace(F, str(file)) for part in template]
    code, out, err = run(argv)
    assert "Traceback" not in out + err
    assert code in (1, 2), (argv, code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("error: ")


def test_a_token_label_with_markup_is_shown_and_status_keeps_working(sandbox: Path) -> None:
    code, out, err = run(["init", "--token", "a[/x]"])
    assert code == 0 and "token a[/x] initialised" in out, err
    code, out, err = run(["status", "--token", "a[/x]"])
    assert code == 0 and "Traceback" not in out + err and "record:" in out


def test_help_shows_env_vars_defaults_and_bracketed_text(sandbox: Path) -> None:
    code, out, _ = run(["init", "-h"])
    assert code == 0
    assert "[default: ./lab]" in out and "CLEFS_LAB" in out and "CLEFS_PKCS11_MODULE" in out
    assert "[default: clefs-primary]" in out
    code, out, _ = run(["--version"])
    assert code == 0 and out.startswith("hsm-lab ")

"""The transcript's chain and HSM-signed head: every kind of edit is caught and located."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm_lab import errors
from hsm_lab.ceremony.manifest import parse_manifest
from hsm_lab.ceremony.record import Record, lab_transcript, verify_lab
from hsm_lab.ceremony.transcripts import Transcript, Verified
from hsm_lab.lab import PRIMARY_TOKEN, Lab
from tests.conftest import Dealt


def lab_copy(dealt: Dealt, target: Path) -> Lab:
    """A copy of the dealt lab: files and token store, with two more entries first."""
    lab = dealt.env.lab
    with dealt.env.hsm.session(PRIMARY_TOKEN, user_pin=dealt.env.pin) as session:
        opened = Record.open(lab, session)
        opened.append("pytest", "drill", {"note": "second"})
        opened.append("pytest", "drill", {"note": "third"})
    shutil.copytree(lab.root, target, ignore=shutil.ignore_patterns("hsm.lock"))
    return Lab(target)


@pytest.fixture
def copy(dealt: Dealt, tmp_path: Path) -> Transcript:
    """A copy of the dealt lab's transcript (three or more signed entries)."""
    return lab_transcript(lab_copy(dealt, tmp_path / "copy"))


def verify(t: Transcript) -> Verified:
    state = verify_lab(Lab(t.path.parent))
    assert state.head is not None
    return state.head


def lines(t: Transcript) -> list[dict]:
    return [json.loads(line) for line in t.path.read_text().splitlines()]


def rewrite(t: Transcript, entries: list[dict]) -> None:
    t.path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_untouched_transcript_verifies_against_the_pinned_key(dealt: Dealt, copy: Transcript) -> None:
    verified = verify(copy)
    assert verified.entries == len(lines(copy)) >= 3
    assert verified.signer_token == PRIMARY_TOKEN


def edit_params(entries: list[dict]) -> list[dict]:
    entries[1]["params"] = {"note": "rewritten"}
    return entries


def edit_and_rehash(entries: list[dict]) -> list[dict]:
    from hsm_lab.ceremony.transcripts import entry_hash

    entries[1]["actor"] = "mallory"
    entries[1]["hash"] = entry_hash(entries[1])
    return entries


def drop_middle(entries: list[dict]) -> list[dict]:
    return entries[:1] + entries[2:]


def drop_last(entries: list[dict]) -> list[dict]:
    return entries[:-1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (edit_params, "transcript entry 2 .*hash does not match its content"),
        (edit_and_rehash, "transcript entry 3 .*does not chain to entry 2"),
        (drop_middle, "transcript entry 2: seq is 3, expected 2"),
        (drop_last, "signed head is at entry .* the chain ends at entry"),
    ],
)
def test_edits_are_caught_and_the_first_broken_entry_named(
    dealt: Dealt, copy: Transcript, edit: Callable[[list[dict]], list[dict]], message: str
) -> None:
    rewrite(copy, edit(lines(copy)))
    with pytest.raises(errors.TranscriptError, match=message):
        verify(copy)


def test_a_forged_head_signature_is_refused(dealt: Dealt, copy: Transcript) -> None:
    doc = json.loads(copy.head_path.read_text())
    signature = doc["signature"]["signature"]
    doc["signature"]["signature"] = ("A" if signature[0] != "A" else "B") + signature[1:]
    copy.head_path.write_text(json.dumps(doc))
    with pytest.raises(errors.TranscriptError, match="head signature does not verify"):
        verify(copy)


def test_a_head_rewritten_to_match_a_truncated_chain_is_refused(dealt: Dealt, copy: Transcript) -> None:
    entries = lines(copy)[:-1]
    rewrite(copy, entries)
    doc = json.loads(copy.head_path.read_text())
    doc["head"]["seq"], doc["head"]["hash"] = entries[-1]["seq"], entries[-1]["hash"]
    copy.head_path.write_text(json.dumps(doc))
    with pytest.raises(errors.TranscriptError, match="head signature does not verify"):
        verify(copy)


def test_cli_transcript_verify_exits_non_zero_on_tampering(dealt: Dealt, tmp_path: Path, run_cli) -> None:
    lab = lab_copy(dealt, tmp_path / "lab-copy")
    ok = run_cli("transcript", "verify", lab=lab.root, pin=dealt.env.pin)
    assert ok.returncode == 0, ok.stderr
    assert "transcript OK" in ok.stdout and "committed heads held by token" in ok.stdout
    entries = [json.loads(line) for line in lab.transcript.read_text().splitlines()]
    entries[1]["params"]["threshold"] = 2
    lab.transcript.write_text("".join(json.dumps(e) + "\n" for e in entries))
    bad = run_cli("transcript", "verify", lab=lab.root, pin=dealt.env.pin)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "transcript entry 2 (generate)" in bad.stderr


@given(st.text(max_size=300))
def test_manifest_parser_refuses_anything_unsigned(text: str) -> None:
    with pytest.raises(errors.ManifestError):
        parse_manifest(text)


@given(
    st.sampled_from(
        [
            "format",
            "ceremony_id",
            "threshold",
            "shares",
            "kcv",
            "custodians",
            "signer",
            "retires",
            "weakened",
            "created",
            "quorum_authority",
        ]
    ),
    st.none() | st.integers() | st.text(max_size=12) | st.lists(st.integers(), max_size=2),
)
def test_any_manifest_field_mutation_is_refused(dealt: Dealt, field: str, value: object) -> None:
    doc = json.loads(dealt.manifest.to_json())
    if doc["manifest"][field] == value:
        return
    doc["manifest"][field] = value
    with pytest.raises(errors.ManifestError):
        parse_manifest(json.dumps(doc))

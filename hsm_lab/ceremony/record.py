"""The lab's ceremony record, and the one signer it trusts.

Every command that reads or appends checks three things together before it acts:

- the pinned signer (the anchor): the first token's ceremony signing key, fixed
  by `init`, kept in `<lab>/anchor.json` *and* in every token of the lab as a
  data object nobody can change or destroy. A witness reads its fingerprint
  aloud as words; an auditor may pin it out of band (`--expect-signer`).
- the transcript and the manifests: a hash chain whose head, and every manifest,
  must be signed by an authorised signer: the anchor, or a token key that a
  quorum authorised when it imported L0 (see `hsm_lab.ceremony.authority`).
- the token's heads: one append-only record per committed step (seq, entry
  hash, ceremony id, manifest hash). The chain must agree with every one, so an
  edited, truncated or rolled-back record is caught by the token, not the files.

Each has its module: `anchor`, `token_records`, `verification` (all under
`hsm_lab.ceremony`); this one opens the record on a token, repairs interrupted
steps and appends, and re-exports the others' names.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hsm_lab import errors, txn
from hsm_lab.ceremony.anchor import (
    ANCHOR_FORMAT,
    EXPECT_SIGNER_ENV,
    WORD_COUNT,
    Anchor,
    anchor_from_doc,
    anchor_path,
    expected_signer,
    fingerprint,
    fingerprint_words,
    grouped,
    load_anchor,
    parse_expected_signer,
    require_anchor,
    save_anchor,
)
from hsm_lab.ceremony.manifest import CEREMONY_ID
from hsm_lab.ceremony.token_records import (
    ANCHOR_LABEL,
    HEAD_PREFIX,
    HEAD_RECORD_FORMAT,
    TokenRecords,
    head_label,
    head_record,
    read_token_records,
    token_anchor,
    token_heads,
    write_token_anchor,
)
from hsm_lab.ceremony.transcripts import Transcript
from hsm_lab.ceremony.verification import (
    ManifestPath,
    RecordState,
    Signer,
    apply_entry,
    check_heads,
    verify_record,
)
from hsm_lab.hsm import SIGNING_LABEL, TokenSession
from hsm_lab.lab import Lab

__all__ = [
    "ANCHOR_FORMAT",
    "ANCHOR_LABEL",
    "COMMITTED_ACTIONS",
    "EXPECT_SIGNER_ENV",
    "HEAD_PREFIX",
    "HEAD_RECORD_FORMAT",
    "WORD_COUNT",
    "Anchor",
    "ManifestPath",
    "Record",
    "RecordState",
    "Signer",
    "TokenRecords",
    "Warn",
    "anchor_from_doc",
    "anchor_path",
    "check_heads",
    "expected_signer",
    "fingerprint",
    "fingerprint_words",
    "grouped",
    "head_label",
    "head_record",
    "lab_transcript",
    "load_anchor",
    "open_record",
    "parse_expected_signer",
    "read_token_records",
    "reconcile",
    "require_anchor",
    "save_anchor",
    "token_anchor",
    "token_heads",
    "verify_lab",
    "verify_record",
    "write_token_anchor",
]

# Entries that change the HSM, the share set or KMS: each gets a record in the token.
COMMITTED_ACTIONS = frozenset(
    {"init", "generate", "import", "rekey", "byok.import", "byok.revoke", "recover", "import.aborted"}
)
Warn = Callable[[str], None]


# -- the record opened on a token ----------------------------------------------------


def lab_transcript(lab: Lab) -> Transcript:
    return Transcript(lab.transcript, lab.transcript_head, lab.root / "pending" / "append-journal.json")


class Record:
    """The lab's record, verified and opened for appending on one logged-in token.

    `open` checks the pin, recovers an interrupted append, verifies everything,
    removes ephemeral leftovers, and rolls interrupted steps forward or back;
    what it did is in `warnings` (one line each) and in the transcript.
    """

    def __init__(self, lab: Lab, session: TokenSession, state: RecordState) -> None:
        self.lab = lab
        self.session = session
        self.state = state
        self.transcript = lab_transcript(lab)
        self.warnings: list[str] = []
        self.own = fingerprint(session.signing_public_key())
        self._size = self._transcript_size()

    @classmethod
    def open(
        cls, lab: Lab, session: TokenSession, *, expect: str | None = None, actor: str = "clefs"
    ) -> Record:
        anchor = require_anchor(lab)
        found = read_token_records(session)
        pinned = token_anchor(session, found)
        if pinned is None:
            raise errors.TranscriptError(
                f"token {session.token_label!r} holds no signer pin: it was not initialised by this lab "
                f"(run `hsm-lab init --token {session.token_label}`)"
            )
        if pinned != anchor.fingerprint:
            raise errors.TranscriptError(
                f"token {session.token_label!r} pins signer {pinned[:16]}…, but {anchor_path(lab)} pins "
                f"{anchor.fingerprint[:16]}…: the lab's pin was replaced; do not trust this lab"
            )
        transcript = lab_transcript(lab)
        heads = found.heads
        recovered = transcript.recover_journal(
            session, {h["hash"] for h in heads}, lambda action: action in COMMITTED_ACTIONS
        )
        state = verify_record(transcript, lab.manifest_path, anchor, heads=heads, expect=expect)
        record = cls(lab, session, state)
        if recovered:
            record.warnings.append(recovered)
        record._sweep(actor)
        record._recover_steps(actor)
        record._check_current()
        return record

    @property
    def authorised(self) -> bool:
        return self.own in self.state.signers

    def require_signer(self) -> None:
        if not self.authorised:
            raise errors.TranscriptError(
                f"token {self.session.token_label!r} (signing key {self.own[:16]}…) is not an authorised "
                f"signer of this lab (pinned: {self.state.anchor.fingerprint[:16]}…): import the master key "
                "into it with a quorum and --authorise-signer first"
            )

    def append(self, actor: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Append one entry signed by this token; committed steps also get a token record."""
        authorising = action == "import" and params.get("signer_authorised") is not None
        if not authorising:
            self.require_signer()
        if self._transcript_size() != self._size:
            raise errors.TranscriptError(
                "the transcript changed on disk while this command ran; run it again"
            )
        entry = self.transcript.build(self.state.entries, actor, action, params)
        record = head_record(entry) if action in COMMITTED_ACTIONS else None
        if authorising:  # check the authorisation before the token signs anything
            probe = RecordState(self.state.anchor, list(self.state.entries), dict(self.state.signers))
            probe.manifests, probe.current = self.state.manifests, self.state.current
            apply_entry(probe, entry, self.lab.manifest_path)
        self.transcript.append(self.session, entry, record)
        self.state.entries.append(entry)
        apply_entry(self.state, entry, self.lab.manifest_path)
        self._size = self._transcript_size()
        return entry

    def _transcript_size(self) -> int:
        try:
            return self.lab.transcript.stat().st_size
        except FileNotFoundError:
            return 0

    def _sweep(self, actor: str) -> None:
        removed = self.session.sweep_ephemeral()
        if not removed:
            return
        line = f"removed {len(removed)} leftover object(s) of an interrupted step: {', '.join(removed)}"
        self.warnings.append(line)
        if self.authorised:
            self.append(actor, "recover", {"token": self.session.token_label, "destroyed": removed})

    def _recover_steps(self, actor: str) -> None:
        intents, malformed = txn.pending(self.lab.root)
        for path in malformed:
            path.unlink(missing_ok=True)
            self.warnings.append(f"removed a malformed step intent {path.name}")
        for intent in intents:
            self._recover(intent, actor)

    def _recover(self, intent: txn.Intent, actor: str) -> None:
        committed = any(e["params"].get("txn") == intent.txn for e in self.state.entries)
        if committed:
            if intent.ceremony_id and intent.ceremony_id == self.state.current:
                self.lab.set_current_ceremony(intent.ceremony_id)
            intent.finish()
            self.warnings.append(f"completed the interrupted {intent.step} ({intent.txn}): it had committed")
            return
        if intent.token != self.session.token_label:
            self.warnings.append(
                f"an interrupted {intent.step} on token {intent.token!r} is rolled back by the next "
                "command there"
            )
            return
        explained = self.state.explained_keys(intent.token)
        destroyed = []
        for label in intent.objects:
            # An intent is only a hint (a planted one too): only a secret key that no
            # committed step explains is ever destroyed; never the signing key or a record.
            if label in explained or label == SIGNING_LABEL:
                continue
            for _ in range(self.session.destroy_secret_keys(label)):
                destroyed.append(label)
        removed = None
        if intent.ceremony_id and intent.ceremony_id not in self.state.manifests:
            folder = self.lab.ceremony_dir(intent.ceremony_id)
            if CEREMONY_ID.match(intent.ceremony_id) and folder.is_dir():
                shutil.rmtree(folder)
                removed = intent.ceremony_id
        params = {
            "txn": intent.txn,
            "step": intent.step,
            "token": intent.token,
            "destroyed": destroyed,
            "removed_ceremony": removed,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        note = ""
        if self.authorised:
            self.append(actor, "recover", params)
        else:
            note = f" (not recorded: token {intent.token!r} is not an authorised signer)"
        intent.finish()
        what = ", ".join(destroyed) or "no HSM object"
        if intent.step == "byok.import":
            note += f"; KMS may already hold the material ({intent.about}): run `byok import` again"
        self.warnings.append(
            f"rolled back the interrupted {intent.step} ({intent.txn}): destroyed {what}{note}"
        )

    def _check_current(self) -> None:
        marker = self.lab.ceremonies / "CURRENT"
        on_disk = marker.read_text().strip() if marker.is_file() else None
        if on_disk != self.state.current:
            raise errors.TranscriptError(
                f"{marker} says {on_disk or 'nothing'}, the verified record says "
                f"{self.state.current or 'none'}: the lab was rolled back or edited; restore it, "
                "or compare with the witnessed record"
            )


def open_record(lab: Lab, session: TokenSession, actor: str, warn: Warn, expect: str | None = None) -> Record:
    """`Record.open` for a step: each line of what it repaired goes to `warn`."""
    record = Record.open(lab, session, expect=expect, actor=actor)
    for line in record.warnings:
        warn(line)
    return record


def reconcile(state: RecordState, token: str, inventory: list[Any]) -> tuple[list[str], list[str]]:
    """(objects on the token the record does not explain, keys the record puts there that are gone)."""
    explained = state.explained_keys(token)
    unexplained: list[str] = []
    seen: set[str] = set()
    for item in inventory:
        if item.object_class == "data" and (item.label == ANCHOR_LABEL or item.label.startswith(HEAD_PREFIX)):
            continue
        if item.label == SIGNING_LABEL and item.object_class in ("private_key", "public_key"):
            continue
        if item.object_class == "secret_key" and item.label in explained:
            seen.add(item.label)
            continue
        unexplained.append(f"{item.object_class} {item.label!r}")
    missing = sorted(explained - seen)
    return unexplained, missing


def verify_lab(lab: Lab, *, expect: str | None = None) -> RecordState:
    """Verify the files alone (no token records): for reading without a PIN."""
    return verify_record(lab_transcript(lab), lab.manifest_path, require_anchor(lab), expect=expect)

"""Shares and custodian files: preconditions (table-driven) and parsing (property-based)."""

from __future__ import annotations

import json
import secrets

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm_lab import errors
from hsm_lab.ceremony import quorum_weaknesses, shares
from hsm_lab.ceremony.custodians import Custodian, parse_custodians
from hsm_lab.ceremony.shares import Share


@pytest.mark.parametrize(
    ("threshold", "count", "message"),
    [
        (1, 7, "below 2"),
        (8, 7, "larger than the share count"),
        (2, 1, "out of range"),
        (2, 256, "out of range"),
        (0, 0, "out of range"),
    ],
)
def test_split_preconditions_each_have_their_own_message(threshold: int, count: int, message: str) -> None:
    with pytest.raises(errors.InputError, match=message):
        shares.check_parameters(threshold, count)


@pytest.mark.parametrize(
    ("threshold", "count", "flags_needed"),
    [
        (5, 7, set()),
        (4, 7, set()),
        (3, 5, set()),
        (3, 6, {"--allow-weak-quorum"}),
        (2, 3, {"--allow-weak-quorum"}),
        (4, 8, {"--allow-weak-quorum"}),
        (7, 7, {"--allow-no-spare"}),
        (3, 3, {"--allow-no-spare"}),
        (2, 2, {"--allow-weak-quorum", "--allow-no-spare"}),
    ],
)
def test_strict_quorum_default_and_explicit_weakening(
    threshold: int, count: int, flags_needed: set[str]
) -> None:
    """Each weakening needs its own flag, and every accepted weakening is recorded."""
    weak = "--allow-weak-quorum" in flags_needed
    spare = "--allow-no-spare" in flags_needed
    assert quorum_weaknesses(threshold, count, allow_weak=weak, allow_no_spare=spare).__len__() == len(
        flags_needed
    )
    for flag in flags_needed:
        with pytest.raises(errors.InputError, match=flag):
            quorum_weaknesses(
                threshold,
                count,
                allow_weak=weak and flag != "--allow-weak-quorum",
                allow_no_spare=spare and flag != "--allow-no-spare",
            )


def test_split_then_any_threshold_subset_combines_to_the_secret() -> None:
    secret = bytearray(secrets.token_bytes(32))
    parts = shares.split(secret, 3, 5)
    assert len({p[-1] for p in parts}) == 5 and all(len(p) == 33 for p in parts)
    subset = [Share("c", f"n{i}", bytearray(p)) for i, p in enumerate(parts[1:4])]
    assert shares.combine(subset, 3) == secret


def test_combine_refuses_too_few_shares_instead_of_returning_a_wrong_key() -> None:
    secret = bytearray(secrets.token_bytes(32))
    parts = [Share("c", f"n{i}", bytearray(p)) for i, p in enumerate(shares.split(secret, 3, 5))]
    with pytest.raises(errors.QuorumError, match="2 valid shares presented, 3 needed"):
        shares.combine(parts[:2], 3)


def test_seal_and_unseal_round_trip_and_wrong_identity_is_one_error() -> None:
    alice, mallory = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    share = Share("cer-x", "alice", bytearray(secrets.token_bytes(32) + b"\x07"))
    sealed = shares.seal(share, Custodian("alice", str(alice.to_public())))
    assert bytes(share.value) not in sealed
    opened = shares.unseal(sealed, "alice", [alice])
    assert opened.value == share.value and opened.custodian == "alice"
    with pytest.raises(errors.ShareRejected, match="alice: cannot open the share"):
        shares.unseal(sealed, "alice", [mallory])


valid_share = st.builds(
    lambda cid, name, value, x: Share(cid, name, bytearray(value + bytes([x]))),
    st.text(alphabet="abcdef0123456789-", min_size=1, max_size=64),
    st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,31}\Z"),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=1, max_value=255),
)


@given(valid_share)
def test_share_documents_round_trip(share: Share) -> None:
    parsed = shares.parse_share(bytes(shares.encode_share(share)))
    assert (parsed.ceremony_id, parsed.custodian, parsed.value) == (
        share.ceremony_id,
        share.custodian,
        share.value,
    )


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_cleanly(payload: bytes) -> None:
    try:
        shares.parse_share(payload, "someone")
    except errors.ShareRejected as exc:
        assert "\n" not in str(exc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200)
@given(valid_share, st.sampled_from(["format", "ceremony_id", "custodian", "share", "extra"]), json_values)
def test_any_field_mutation_is_refused_or_still_a_valid_share(
    share: Share, field: str, value: object
) -> None:
    doc = json.loads(bytes(shares.encode_share(share)))
    doc[field] = value
    try:
        parsed = shares.parse_share(json.dumps(doc).encode())
    except errors.ShareRejected:
        return
    assert len(parsed.value) == 33 and parsed.value[-1] != 0
    assert field in {"ceremony_id", "custodian"}  # only a differently named, well-formed share passes


@given(st.text(max_size=400))
def test_custodian_files_parse_or_fail_with_one_line(text: str) -> None:
    try:
        custodians = parse_custodians(text)
    except errors.InputError as exc:
        assert "\n" not in str(exc)
        return
    assert custodians and len({c.name for c in custodians}) == len(custodians)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[\\[custodian\\]\\] entries"),
        ('[[custodian]]\nname = "Alice"\npassphrase = true\n', "name 'Alice' is invalid"),
        ('[[custodian]]\nname = "a"\n', "exactly one of"),
        ('[[custodian]]\nname = "a"\npassphrase = true\nrecipient = "age1x"\n', "exactly one of"),
        ('[[custodian]]\nname = "a"\nrecipient = "age1nope"\n', "is not an age X25519 recipient"),
        (
            '[[custodian]]\nname = "a"\npassphrase = true\n[[custodian]]\nname = "a"\npassphrase = true\n',
            "listed twice",
        ),
        ('[[custodian]]\nname = "a"\npassphrase = true\ncolour = 1\n', "unknown keys"),
        ("[[custodian", "not valid TOML"),
    ],
)
def test_custodian_file_errors(text: str, message: str) -> None:
    with pytest.raises(errors.InputError, match=message):
        parse_custodians(text)

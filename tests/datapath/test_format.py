"""The envelope format: the strict parser, canonical headers, every mutation refused."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm_lab.ceremony.jose import canonical_json
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath.envelope import (
    EnvelopeCrypter,
    RecordAuthenticationError,
)
from hsm_lab.errors import InputError
from tests.datapath.support import (
    HOME,
    Deployment,
)

# --------------------------------------------------------------------- parser properties


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_parser_arbitrary_bytes(blob: bytes) -> None:
    try:
        env.parse(blob)
    except RecordAuthenticationError:
        pass


HEADER_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.binary(max_size=16)
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from([*sorted(env.HEADER_FIELDS), "x"]), HEADER_VALUES, max_size=8),
    st.binary(max_size=40),
    st.integers(min_value=0, max_value=2),
)
def test_parser_structured_garbage(fields: dict[str, Any], body: bytes, version: int) -> None:
    doc = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in fields.items()}
    header = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    blob = env.PREFIX.pack(env.MAGIC, version, len(header)) + header + body
    try:
        parsed = env.parse(blob)
    except RecordAuthenticationError:
        return
    assert parsed.header.encode() == header  # only a well-formed, canonical header gets through


ARNS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.from_regex(env.RECORD_ID_RE, fullmatch=True),
    ARNS,
    st.binary(min_size=1, max_size=300),
    st.binary(min_size=12, max_size=12),
    st.sampled_from(env.E2E_MODES),
    st.datetimes(min_value=datetime(1000, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"
    ),
)
def test_header_is_canonical_json_and_round_trips(
    data_class: str, record_id: str, arn: str, edk: bytes, nonce: bytes, e2e: str | None, written: str
) -> None:
    header = env.Header(data_class, record_id, arn, edk, nonce, e2e, written)
    document = {
        "alg": "A256GCM",
        "data_class": data_class,
        "record_id": record_id,
        "kms_key_arn": arn,
        "edk": base64.b64encode(edk).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "e2e": e2e,
        "written": written,
    }
    assert header.encode() == canonical_json(document)
    assert env.parse(header.prefix() + bytes(16)).header == header


def test_header_refuses_unencodable_fields() -> None:
    for bad in (
        {"kms_key_arn": 'arn"x'},
        {"kms_key_arn": "a b"},
        {"record_id": "a/b"},
        {"e2e": "pgp"},
        {"written": "2026-13-01T00:00:00.000Z"},
        {"written": "yesterday"},
    ):
        fields = {**env.Header("c-1", "r1", "arn:x", b"k", bytes(12))._asdict(), **bad}
        with pytest.raises(InputError):
            env.Header(**fields).encode()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_mutation_of_an_envelope_is_refused(
    sealed_record: tuple[EnvelopeCrypter, bytes, str], data: st.DataObject
) -> None:
    crypter, blob, arn = sealed_record
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    mutated = bytearray(blob)
    mutated[index] ^= mask
    try:
        crypter.decrypt(
            bytes(mutated), data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
        )
    except RecordAuthenticationError:
        return
    raise AssertionError(f"a mutation at byte {index} was accepted")


def test_a_warm_reader_refuses_every_header_mutation_too(
    deployment: Deployment, sealed_record: tuple[EnvelopeCrypter, bytes, str]
) -> None:
    """Once a reader has opened a record, later headers with the same per-key part take the
    short parse (_parse_known): it must refuse exactly what the full parser refuses."""
    _, blob, arn = sealed_record
    reader = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    opened = reader.decrypt(blob, data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME)
    assert opened.header == env.parse(blob).header
    short = reader._parse_known(memoryview(blob), "appointments", "prop-1")
    assert short is not None and short[0] == opened.header  # the short parse is armed and agrees
    assert reader.decrypt(
        blob, data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
    ) == opened
    aad_end = len(env.parse(blob).aad)
    for index in range(aad_end):
        for mask in (0x01, 0x20, 0x80):
            mutated = bytearray(blob)
            mutated[index] ^= mask
            with pytest.raises(RecordAuthenticationError):
                reader.decrypt(
                    bytes(mutated), data_class="appointments", record_id="prop-1", key_arn=arn, region=HOME
                )
    with pytest.raises(RecordAuthenticationError, match="wrong class or record id"):
        reader.decrypt(blob, data_class="appointments", record_id="prop-2", key_arn=arn, region=HOME)


def test_written_times_are_checked_as_calendar_times() -> None:
    for good in ("2024-02-29T23:59:59.999Z", "1970-01-01T00:00:00.000Z", env.written_now()):
        assert env._valid_written(good), good
    for bad in (
        "2026-02-29T00:00:00.000Z",  # not a leap year
        "2026-13-01T00:00:00.000Z",
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:00:60.000Z",
        "0000-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000",
        "2026-01-01 00:00:00.000Z",
        "\u0662026-01-01T00:00:00.000Z",  # a non-ASCII digit
    ):
        assert not env._valid_written(bad), bad

"""The ``clefs.envelope/v2`` format: constants, header encoding, the strict parser.

The format, its guarantees and the reasons for it are described in :mod:`hsm_lab.datapath.envelope`
and docs/datapath.md ("Format"). Nothing here touches a key.
"""

from __future__ import annotations

import binascii
import re
import struct
import time
from datetime import datetime
from typing import NamedTuple

from hsm_lab.errors import ClefsError, InputError
from infra.model.data_classes import CLASS_NAME_PATTERN

FORMAT = "clefs.envelope/v2"
MAGIC = b"CLEF"
VERSION = 2
ALG = "A256GCM"
E2E_AGE = "age-x25519"
E2E_MODES = (None, E2E_AGE)
KEY_LEN = 32
NONCE_LEN = 12
NONCE_COUNTER_LEN = 8  # invocation field of the deterministic nonce (SP 800-38D 8.2.1)
TAG_LEN = 16
MAX_HEADER = 16 * 1024  # a KMS CiphertextBlob is at most 6144 bytes (8 KiB in base64)
MAX_EDK = 6144
MAX_RECORD_BYTES = 1 << 30
PREFIX = struct.Struct(">4sBI")  # magic, version, header length
HEADER_BYTES = PREFIX.size + MAX_HEADER  # enough to read any envelope header
HEADER_FIELDS = frozenset(
    {"alg", "data_class", "record_id", "kms_key_arn", "edk", "nonce", "e2e", "written"}
)
WRITTEN_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)

CONTEXT_KEY = "data_class"
"""The only KMS encryption-context key; equals infra.model.data_classes.ENCRYPTION_CONTEXT_KEY."""

RECORD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RECORD_ID_OK = RECORD_ID_RE.fullmatch
CLASS_RE = re.compile(CLASS_NAME_PATTERN)
MAX_CLASS_LEN = 64  # the format's bound; a deployment's names are 3-32 (data_classes.NAME_MAX)


def is_class_name(name: object) -> bool:
    """A data class name as the envelope carries it: the class-name grammar, at most 64."""
    return isinstance(name, str) and len(name) <= MAX_CLASS_LEN and CLASS_RE.fullmatch(name) is not None


class RecordAuthenticationError(ClefsError):
    """A record is not authentic, or is not the class/record the reader asked for."""


class KeyServiceError(ClefsError):
    """KMS failed or refused for a reason other than authenticity (access, network, state)."""


def encryption_context(data_class: str) -> dict[str, str]:
    """The KMS encryption context of a class: exactly what the key policies' condition checks."""
    return {CONTEXT_KEY: data_class}


def check_record_id(record_id: object) -> str:
    """A record id: 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit."""
    if not isinstance(record_id, str) or not RECORD_ID_RE.fullmatch(record_id):
        shown = repr(record_id)[:40] if isinstance(record_id, str) else type(record_id).__name__
        raise InputError(
            f"record id {shown} is invalid: use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    return record_id


def _not_authentic(data_class: str, record_id: str) -> RecordAuthenticationError:
    return RecordAuthenticationError(f"record {data_class}/{record_id}: not authentic")


def _wrong_record(data_class: str, record_id: str) -> RecordAuthenticationError:
    return RecordAuthenticationError(
        f"record {data_class}/{record_id}: wrong class or record id (this is not that record)"
    )


# --------------------------------------------------------------------------- format


_ARN_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,2048}")  # printable ASCII except space, " and backslash
# The canonical header is a regular language: sorted keys, no whitespace, and value alphabets
# that need no JSON escaping. One fullmatch checks the structure and extracts every field.
_HEADER_RE = re.compile(
    rb'\{"alg":"A256GCM","data_class":"('
    + CLASS_NAME_PATTERN.encode("ascii")
    + rb')","e2e":(null|"age-x25519"),'
    rb'"edk":"([A-Za-z0-9+/]+={0,2})","kms_key_arn":"([\x21\x23-\x5b\x5d-\x7e]{1,2048})",'
    rb'"nonce":"([A-Za-z0-9+/]{16})","record_id":"([A-Za-z0-9][A-Za-z0-9._-]{0,127})",'
    rb'"written":"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)"\}'
)


_written_cache: tuple[int, str] = (-1, "")  # (UTC millisecond, its `written`): many records share one


def written_now() -> str:
    """The `written` field for a record sealed now (UTC, milliseconds)."""
    global _written_cache
    millis = int(time.time() * 1000)
    cached = _written_cache  # one tuple read: safe without a lock (a race only recomputes)
    if cached[0] != millis:
        second, rest = divmod(millis, 1000)
        cached = (millis, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{rest:03d}Z")
        _written_cache = cached
    return cached[1]


def _valid_written(value: str) -> bool:
    """The shape (ASCII digits) and a real calendar time; fromisoformat is C, strptime was the
    largest single per-record cost (it rejects the same values: month 13, second 60, year 0)."""
    if not WRITTEN_RE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def encode_header(
    data_class: str,
    record_id: str,
    kms_key_arn: str,
    edk_b64: str,
    nonce_b64: str,
    e2e: str | None,
    written: str,
) -> bytes:
    """The header's canonical JSON (RFC 8785: sorted keys, no whitespace), written out directly.

    Same bytes as ``canonical_json`` of the header object (a property test checks it). Every
    value is restricted to characters JSON does not escape: class and record id by their
    patterns, base64 by nature, the key ARN to printable ASCII without space, quote, backslash.
    """
    if (
        not is_class_name(data_class)
        or not RECORD_ID_RE.fullmatch(record_id)
        or not _ARN_RE.fullmatch(kms_key_arn)
        or e2e not in E2E_MODES
        or not _valid_written(written)
    ):
        raise InputError(
            "envelope header fields out of range (class, record id, key ARN, e2e mode or written time)"
        )
    return _encode_checked(data_class, record_id, kms_key_arn, edk_b64, nonce_b64, e2e, written)


def _encode_checked(
    data_class: str,
    record_id: str,
    kms_key_arn: str,
    edk_b64: str,
    nonce_b64: str,
    e2e: str | None,
    written: str,
) -> bytes:
    """encode_header for fields the caller has already checked."""
    return _HEADER_FORMAT % (
        _template(data_class, e2e, edk_b64, kms_key_arn),
        nonce_b64.encode("ascii"),
        record_id.encode("ascii"),
        written.encode("ascii"),
    )


_NONCE_KEY = b'"nonce":"'
# template (up to and including the nonce key), nonce, record id, written: the whole header
_HEADER_FORMAT = b'%s%s","record_id":"%s","written":"%s"}'
# Everything before the ciphertext (the AAD): magic, version, header length (u32 BE), header.
_PREFIX_FORMAT = PREFIX.pack(MAGIC, VERSION, 0)[:5] + b"%s" + _HEADER_FORMAT
# The header's length beyond its template and record id (16 nonce characters, 24 of `written`).
_TAIL_LEN = len(_HEADER_FORMAT % (b"", b"=" * 16, b"", b"=" * 24))


def _template(data_class: str, e2e: str | None, edk_b64: str, kms_key_arn: str) -> bytes:
    """The header's bytes up to and including ``"nonce":"``: the same for every record sealed
    under one data key, class and e2e mode, so the hot path builds it once per data key."""
    return "".join(
        (
            '{"alg":"A256GCM","data_class":"',
            data_class,
            '","e2e":',
            "null" if e2e is None else f'"{e2e}"',
            ',"edk":"',
            edk_b64,
            '","kms_key_arn":"',
            kms_key_arn,
            '","nonce":"',
        )
    ).encode("ascii")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class Header(NamedTuple):
    data_class: str
    record_id: str
    kms_key_arn: str
    edk: bytes
    nonce: bytes
    e2e: str | None = None
    written: str = "1970-01-01T00:00:00.000Z"

    def encode(self) -> bytes:
        return encode_header(
            self.data_class,
            self.record_id,
            self.kms_key_arn,
            _b64(self.edk),
            _b64(self.nonce),
            self.e2e,
            self.written,
        )

    def prefix(self) -> bytes:
        """Everything before the ciphertext: the AAD."""
        return _prefix(self.encode())


def _prefix(header: bytes) -> bytes:
    return PREFIX.pack(MAGIC, VERSION, len(header)) + header


class Envelope(NamedTuple):
    """A parsed (not yet authenticated) envelope; `aad` and `body` are views into the blob."""

    header: Header
    aad: memoryview
    body: memoryview  # ciphertext followed by the 16-byte tag


def _header_from(raw: bytes) -> Header:
    """The header, if `raw` is exactly a canonical header (one byte string per header)."""
    match = _HEADER_RE.fullmatch(raw)
    if match is None:
        raise ValueError("not a canonical clefs.envelope/v1 header")
    data_class, e2e, edk_b64, arn, nonce_b64, record_id, written = match.groups()
    edk = binascii.a2b_base64(edk_b64)
    if (
        not 0 < len(edk) <= MAX_EDK
        or len(data_class) > MAX_CLASS_LEN
        or binascii.b2a_base64(edk, newline=False) != edk_b64
        or not _valid_written(written.decode("ascii"))
    ):
        raise ValueError("bad field")  # e.g. base64 with non-zero padding bits: not canonical
    return Header(
        data_class.decode("ascii"),
        record_id.decode("ascii"),
        arn.decode("ascii"),
        edk,
        binascii.a2b_base64(nonce_b64),  # 16 characters: exactly 12 bytes, no padding
        None if e2e == b"null" else E2E_AGE,
        written.decode("ascii"),
    )


def parse(blob: bytes | bytearray | memoryview, data_class: str = "?", record_id: str = "?") -> Envelope:
    """Strictly parse an envelope; anything malformed is RecordAuthenticationError.

    `data_class` / `record_id` only name the record in the message (the caller's expectation,
    never the untrusted header).
    """
    view = memoryview(blob).cast("B")
    try:
        if len(view) < PREFIX.size + TAG_LEN:
            raise ValueError("short")
        magic, version, length = PREFIX.unpack_from(view)
        if magic != MAGIC or version != VERSION or not 0 < length <= MAX_HEADER:
            raise ValueError("prefix")
        end = PREFIX.size + length
        if len(view) < end + TAG_LEN:
            raise ValueError("short")
        header = _header_from(bytes(view[PREFIX.size : end]))
    except (ValueError, binascii.Error, struct.error):
        raise _not_authentic(data_class, record_id) from None
    return Envelope(header, view[:end], view[end:])


def read_header(prefix: bytes | bytearray | memoryview) -> tuple[Header, bytes] | None:
    """The header and the AAD bytes from the start of an object (no body needed), or None.

    Not authenticated: only a decryption (the data key) proves a record authentic. Used by
    `verify` to check what every stored object claims to be without decrypting it.
    """
    view = memoryview(prefix).cast("B")
    try:
        magic, version, length = PREFIX.unpack_from(view)
        if magic != MAGIC or version != VERSION or not 0 < length <= MAX_HEADER:
            return None
        end = PREFIX.size + length
        if len(view) < end:
            return None
        return _header_from(bytes(view[PREFIX.size : end])), bytes(view[:end])
    except (ValueError, binascii.Error, struct.error):
        return None

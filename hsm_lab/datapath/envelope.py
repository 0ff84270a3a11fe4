"""``clefs.envelope/v2``: one record, envelope-encrypted under a cached KMS data key.

Layout (all of it is one S3 object)::

    b"CLEF" | version (1 byte, = 2) | header length (u32 big-endian) | header | ciphertext ‖ tag

    header = canonical JSON (RFC 8785 form: sorted keys, no whitespace) of exactly
      {"alg": "A256GCM", "data_class": str, "record_id": str, "kms_key_arn": str,
       "edk": base64(KMS CiphertextBlob), "nonce": base64(12 bytes), "e2e": null | "age-x25519",
       "written": "YYYY-MM-DDTHH:MM:SS.mmmZ"}

``written`` (v2) is the writer's UTC clock when it sealed the record; it is in the AAD, so it is
authenticated like the rest, and `data get` prints it. It is what lets a reader notice a record
rolled back to an older S3 version (docs/datapath.md, "Rollback"). v1 (no ``written``) is no
longer read: the lab never kept v1 records (LocalStack keeps no state).

Values are restricted so that no JSON escaping ever occurs (class: a-z 0-9 -, record id:
A-Z a-z 0-9 . _ - up to 128, key ARN: printable ASCII without space, quote or backslash); a
reader accepts only the canonical bytes, which makes the header a regular language that this
module parses with one regular expression (any JSON parser plus a re-encoding check agrees).

The body is AES-256-GCM under the data key with a 96-bit nonce (NIST SP 800-38D 8.2.1: a random
32-bit fixed field per data key, then a 64-bit counter; see DataKey); the AAD is every byte
before the ciphertext (magic, version, length and header), so the class, the record id, the
wrapped key and the e2e flag are all authenticated. The data key itself is bound to its class
by the KMS encryption context, which is exactly ``{"data_class": <class>}`` (the key policies'
condition); a decrypt therefore needs the class's key *and* the class's context.

Why not the AWS Encryption SDK message format: the ESDK's caching CMM keys its cache on the
whole encryption context, so binding the record id into the KMS context (as the ESDK would)
makes every record a cache miss, i.e. one KMS call per record. Keeping the KMS context at the
class and binding the record id with GCM's AAD gives the same binding with one KMS call per
4096 records. The price is a format of our own, hence the magic, the version byte and a
strict parser: a reader refuses any version, field, algorithm or encoding it does not know.

Data keys are cached (:class:`DataKeyCache`) with limits: age (300 s), messages per key (4096)
and bytes per key (4 GiB). 4096 messages is far below the 2^32 invocation limit of GCM
(NIST SP 800-38D 8.3) and makes 10,000 records cost 3 GenerateDataKey calls. Decrypted data
keys are cached by (class, wrapped key), with the same age limit: a cache hit means KMS
already unwrapped exactly this key under exactly this class's context. Keys are wiped from
memory (zeroed bytearray) once evicted and no longer in use; see DataKeyCache for the limits
of that promise.

Every authentication failure (malformed envelope, unknown version, tampered header or body,
KMS refusing the wrapped key) is one exception, :class:`RecordAuthenticationError`, whose
one-line message names the record and says either "wrong class or record id" or
"not authentic", never which byte or check failed.
"""

from __future__ import annotations

import binascii
import contextlib
import itertools
import os
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm_lab.errors import ClefsError, InputError
from hsm_lab.fs import wipe
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


DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_MESSAGES = 4096
DEFAULT_MAX_BYTES = 1 << 32
GCM_RANDOM_NONCE_LIMIT = 1 << 32  # invocations per key with random 96-bit nonces
DEFAULT_MAX_ENTRIES = 1024
SMALL_RECORD = 64 * 1024  # largest record a cached key meters without the lock (DataKeyCache)

# KMS answers that mean "this wrapped key does not open under this key and context".
_NOT_AUTHENTIC_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


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


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class CacheLimits:
    """How long and how much one data key may be used before KMS is asked for another."""

    max_age_seconds: float = DEFAULT_MAX_AGE
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not self.max_age_seconds > 0:
            raise InputError("cache max_age_seconds must be > 0")
        if not 0 < self.max_messages <= GCM_RANDOM_NONCE_LIMIT:
            raise InputError(f"cache max_messages must be 1..{GCM_RANDOM_NONCE_LIMIT} (GCM random nonces)")
        if not self.max_bytes > 0:
            raise InputError("cache max_bytes must be > 0")


@dataclass(eq=False)
class DataKey:
    """A plaintext data key in memory, its AES-GCM instance and its wrapped form.

    Nonces (encryption only) follow NIST SP 800-38D 8.2.1, the deterministic construction: a
    32-bit fixed field drawn at random when the key is loaded, then a 64-bit invocation counter
    (``nonces``, an itertools.count: its ``next`` is atomic in CPython, so no two records of this
    key ever share a nonce, whatever the threads). The key itself is fresh from KMS
    (GenerateDataKey) for this process and this cache entry only, so no other writer uses it.
    """

    key: bytearray
    edk: bytes
    key_arn: str  # the KMS key that wrapped it, as KMS reported it
    aead: AESGCM | None = None
    # (class, e2e) -> _template; declared before `bytes` (the counter), which shadows the type below it
    templates: dict[tuple[str, str | None], bytes] = field(default_factory=dict)
    nonce_fixed: bytes = b""  # the fixed field of every nonce under this key (8.2.1)
    nonces: itertools.count[int] = field(default_factory=itertools.count)  # the invocation field
    created: float = 0.0
    used: float = 0.0  # the cache clock at the last checkout, hit or peek (eviction order)
    tickets: itertools.count[int] = field(default_factory=itertools.count)  # messages metered
    bytes: int = 0
    users: int = 0
    retired: bool = False
    edk_b64: str = ""

    def __post_init__(self) -> None:
        self.edk_b64 = _b64(self.edk)
        if not _ARN_RE.fullmatch(self.key_arn):
            raise KeyServiceError("KMS reported a key ARN with characters outside printable ASCII")
        if len(self.key) != KEY_LEN:
            raise KeyServiceError(f"KMS returned a {len(self.key)}-byte data key, expected {KEY_LEN}")
        self.nonce_fixed = os.urandom(NONCE_LEN - NONCE_COUNTER_LEN)
        # The bytearray stays alive until the key is retired and no lease holds it: correct
        # whether AESGCM copies the key at construction (OpenSSL >= 3.2 builds) or not.
        self.aead = AESGCM(self.key)

    def wipe(self) -> None:
        # `aead` is dropped before the key is zeroed: a lock-free user (DataKeyCache.hit) that
        # still sees its `aead` after using it knows the zeroing had not begun (EnvelopeCrypter).
        self.aead = None
        wipe(self.key)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evicted: int = 0
    wiped: int = 0


class DataKeyCache:
    """Thread-safe cache of data keys with age / message / byte limits.

    A key is *leased* for one message (``with cache.lease(...) as key``). A metered lease
    (encryption) counts the message and its bytes against the limits; a key past any limit is
    retired and a new one loaded. A retired key is wiped (zeroed) as soon as no lease holds it.
    Loading happens under the cache lock, so concurrent callers never load the same key twice.

    The hot paths :meth:`hit` (encryption) and :meth:`peek` (decryption) take no lock and no
    lease; the limits stay exact (docs/datapath.md, "Data-key cache"): messages are tickets
    from an itertools.count (atomic in CPython), and a lock-free message is at most
    `small_record` bytes, so a key's lock-free bytes never exceed `reserve` = max_messages x
    small_record, which the locked path keeps free (it admits bytes + size <= max_bytes - reserve).
    Limits are fixed at construction.
    """

    def __init__(
        self,
        limits: CacheLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._limits = limits = limits or CacheLimits()
        self.clock = clock
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._entries: dict[Hashable, DataKey] = {}
        self._lock = threading.Lock()
        # 1/16 of the byte limit is kept for lock-free records (64 KiB each with the defaults)
        self.small_record = min(SMALL_RECORD, limits.max_bytes // (limits.max_messages * 16))
        self.reserve = limits.max_messages * self.small_record
        self._locked_max = limits.max_bytes - self.reserve

    @property
    def limits(self) -> CacheLimits:
        return self._limits

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _expired(self, entry: DataKey, now: float) -> bool:
        return now - entry.created >= self._limits.max_age_seconds

    def _retire(self, cache_key: Hashable) -> None:
        entry = self._entries.pop(cache_key)
        entry.retired = True
        self.stats.evicted += 1
        if entry.users == 0:
            entry.wipe()
            self.stats.wiped += 1

    def _sweep(self, now: float) -> None:
        for cache_key in [k for k, e in self._entries.items() if self._expired(e, now)]:
            self._retire(cache_key)
        while len(self._entries) >= self.max_entries:  # least recently used first
            entries = self._entries
            self._retire(min(entries, key=lambda cache_key: entries[cache_key].used))

    def _spent(self, entry: DataKey, size: int) -> bool:
        """Under the lock: a metered use of `entry` for `size` bytes is past a limit (a message
        ticket is drawn: spent either way)."""
        return (
            next(entry.tickets) >= self._limits.max_messages or entry.bytes + size > self._locked_max
        )

    def checkout(
        self, cache_key: Hashable, size: int, load: Callable[[], DataKey], *, metered: bool
    ) -> DataKey:
        """A usable data key for one message of `size` bytes (`load` fetches a new one).

        Pair every checkout with :meth:`checkin` (or use :meth:`lease`)."""
        with self._lock:
            now = self.clock()
            entry = self._entries.get(cache_key)
            if entry is not None and (self._expired(entry, now) or (metered and self._spent(entry, size))):
                self._retire(cache_key)
                entry = None
            if entry is None:
                self.stats.misses += 1
                self._sweep(now)
                entry = load()
                entry.created = now
                if metered:  # counted before the lock-free paths can see it (a single record
                    next(entry.tickets)  # larger than the limit gets a key of its own)
                    entry.bytes += size
                self._entries[cache_key] = entry
            else:
                self.stats.hits += 1
                if metered:
                    entry.bytes += size
            entry.used = now
            entry.users += 1
            return entry

    def hit(self, cache_key: Hashable, size: int) -> DataKey | None:
        """The lock-free hot path of a metered :meth:`checkout` (encryption): the cached key if
        this message is within every limit (its ticket drawn), else None and the caller goes
        through checkout (which retires and loads). Only records of at most `small_record`
        bytes take it (their bytes are covered by `reserve`, see the class docstring).

        No lease is taken (nothing to check in): a key retired and wiped by another thread
        while the caller uses it shows as ``entry.aead`` gone (DataKey.wipe drops it before
        zeroing), and the caller must then start over through checkout (EnvelopeCrypter does).
        ``stats.hits`` is counted without the lock here and in :meth:`peek`: under threads it
        may miss a few hits (the other counters are exact).
        """
        entry = self._entries.get(cache_key)  # a dict read is atomic in CPython
        if entry is None or size > self.small_record or entry.bytes > self._locked_max:
            return None
        now = self.clock()
        if now - entry.created >= self._limits.max_age_seconds:
            return None
        if next(entry.tickets) >= self._limits.max_messages:
            return None
        entry.used = now
        self.stats.hits += 1
        return entry

    def peek(self, cache_key: Hashable) -> DataKey | None:
        """The hot path of an unmetered checkout (decryption), without the lock: the cached key
        if it is younger than the age limit (the only limit an unmetered use has), else None.

        A dict read is atomic in CPython and `created` never changes once the key is cached, so
        the age check is exact. The same caveat as :meth:`hit` applies (``entry.aead`` gone:
        start over through checkout). ``stats.hits`` is counted without the lock here: under
        threads it may miss a few hits (the other counters are exact).
        """
        entry = self._entries.get(cache_key)
        if entry is None:
            return None
        now = self.clock()
        if now - entry.created >= self._limits.max_age_seconds:
            return None
        entry.used = now  # least recently used goes first when the cache is full (_sweep)
        self.stats.hits += 1
        return entry

    def checkin(self, entry: DataKey) -> None:
        with self._lock:
            entry.users -= 1
            if entry.retired and entry.users == 0 and entry.aead is not None:
                entry.wipe()
                self.stats.wiped += 1

    @contextlib.contextmanager
    def lease(
        self, cache_key: Hashable, size: int, load: Callable[[], DataKey], *, metered: bool
    ) -> Iterator[DataKey]:
        """``with cache.lease(...) as key``: checkout, then checkin however the block ends."""
        entry = self.checkout(cache_key, size, load, metered=metered)
        try:
            yield entry
        finally:
            self.checkin(entry)

    def clear(self) -> None:
        """Retire (and wipe when unused) every cached key."""
        with self._lock:
            for cache_key in list(self._entries):
                self._retire(cache_key)


# --------------------------------------------------------------------------- crypter


def _data_key(response: dict[str, Any], edk: bytes, key_arn: str) -> DataKey:
    """Move a KMS answer's plaintext key into a wipeable bytearray (botocore's bytes copy is
    immutable and out of our reach: Python cannot promise erasure, see docs/datapath.md)."""
    key = bytearray(response.pop("Plaintext"))
    try:
        return DataKey(key, edk, str(response.get("KeyId") or key_arn))
    except BaseException:
        wipe(key)
        raise


class Opened(NamedTuple):
    header: Header
    plaintext: bytes


@dataclass
class EnvelopeCrypter:
    """Encrypt/decrypt records as clefs.envelope/v1 with KMS data keys, cached.

    `kms` gives a KMS client for a region. `kms_calls` counts calls by (operation, region).
    """

    kms: Callable[[str], Any]
    encrypt_cache: DataKeyCache = field(default_factory=DataKeyCache)
    decrypt_cache: DataKeyCache = field(default_factory=DataKeyCache)
    kms_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Header templates (see _template) that `parse` accepted, -> (class, key ARN, edk, e2e): a
    # header that starts with one needs only its per-record tail checked. Syntax only, no key.
    _known: dict[bytes, tuple[str, str, bytes, str | None]] = field(default_factory=dict, repr=False)
    _last: dict[str, tuple[bytes, tuple[str, str, bytes, str | None]]] = field(
        default_factory=dict, repr=False
    )  # class -> its last _known entry (startswith is cheaper than find + hash)
    _class_names: set[str] = field(default_factory=set, repr=False)  # names is_class_name accepted
    _written_ok: set[str] = field(default_factory=set, repr=False)  # `written` values already valid

    @classmethod
    def with_limits(
        cls,
        kms: Callable[[str], Any],
        limits: CacheLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> EnvelopeCrypter:
        return cls(kms, DataKeyCache(limits, clock=clock), DataKeyCache(limits, clock=clock))

    @property
    def kms_call_count(self) -> int:
        with self._count_lock:
            return sum(self.kms_calls.values())

    def _kms(self, operation: str, region: str, data_class: str, record: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.kms(region)
        with self._count_lock:
            self.kms_calls[(operation, region)] += 1
        try:
            return getattr(client, operation)(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            if operation == "decrypt" and code in _NOT_AUTHENTIC_CODES:
                raise _not_authentic(data_class, record) from None
            raise KeyServiceError(
                f"KMS {operation} in {region} for class {data_class} refused: {code}"
            ) from None
        except BotoCoreError as exc:
            message = " ".join(str(exc).split())[:200]
            raise KeyServiceError(
                f"KMS {operation} in {region} for class {data_class} failed: {message}"
            ) from None

    def _generate(self, data_class: str, key_arn: str, region: str, record_id: str) -> DataKey:
        response = self._kms(
            "generate_data_key",
            region,
            data_class,
            record_id,
            KeyId=key_arn,
            KeySpec="AES_256",
            EncryptionContext=encryption_context(data_class),
        )
        return _data_key(response, bytes(response["CiphertextBlob"]), key_arn)

    def _unwrap(self, header: Header, data_class: str, record_id: str, key_arn: str, region: str) -> DataKey:
        response = self._kms(
            "decrypt",
            region,
            data_class,
            record_id,
            CiphertextBlob=header.edk,
            KeyId=key_arn,
            EncryptionContext=encryption_context(data_class),
        )
        return _data_key(response, header.edk, key_arn)

    def encrypt(
        self,
        data_class: str,
        record_id: str,
        plaintext: bytes | bytearray | memoryview,
        *,
        key_arn: str,
        region: str,
        e2e: str | None = None,
        written: str | None = None,
    ) -> bytes | bytearray:
        """The envelope of one record (class key `key_arn` in `region`), stamped `written` (now).

        Hot path (docs/datapath.md, "Throughput"): one cache trip (DataKeyCache.hit) when the
        class's current data key is within its limits, else a lease through checkout.
        """
        if record_id.__class__ is not str or _RECORD_ID_OK(record_id) is None:
            check_record_id(record_id)  # raises, unless a valid str subclass
        if data_class not in self._class_names:
            if not is_class_name(data_class):
                raise InputError(f"data class {data_class[:40]!r} is not a class name")
            if len(self._class_names) < DEFAULT_MAX_ENTRIES:
                self._class_names.add(data_class)
        if e2e not in E2E_MODES:
            raise InputError(f"unknown end-to-end mode {e2e!r}")
        if written is None:
            written = written_now()  # valid by construction
        elif not self._valid_written(written):
            raise InputError(f"written time {written[:30]!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
        size = plaintext.nbytes if isinstance(plaintext, memoryview) else len(plaintext)
        if size > MAX_RECORD_BYTES:
            raise InputError(
                f"record {data_class}/{record_id} is {size} bytes; the limit is {MAX_RECORD_BYTES}"
            )
        cache, cache_key = self.encrypt_cache, (data_class, region, key_arn)
        data_key = cache.hit(cache_key, size)
        if data_key is not None:
            aead = data_key.aead
            if aead is not None:
                out = _seal(data_key, aead, data_class, record_id, plaintext, size, e2e, written)
                if data_key.aead is aead:  # not wiped while in use (DataKeyCache.hit): done
                    return out
        data_key = cache.checkout(
            cache_key,
            size,
            lambda: self._generate(data_class, key_arn, region, record_id),
            metered=True,
        )
        try:
            aead = data_key.aead
            assert aead is not None  # a leased key is never wiped
            return _seal(data_key, aead, data_class, record_id, plaintext, size, e2e, written)
        finally:
            cache.checkin(data_key)

    def _parse_known(
        self, blob: bytes | bytearray | memoryview, data_class: str, record_id: str
    ) -> tuple[Header, bytes, memoryview] | None:
        """(header, AAD, body) when the header starts with a template `parse` already accepted
        for this class and is canonical for `record_id`; None sends the record to the full
        parser (never an answer).

        The AAD is checked by rebuilding it: prefix and template as known, the caller's record
        id (checked against the record-id grammar), the blob's 16 nonce characters (they must
        decode strictly to 12 bytes) and its `written` (a valid time); the blob must start with
        exactly those bytes, which is what the full parser's regular expression accepts.
        """
        if blob.__class__ is bytes:
            head, view = blob, None
        else:
            view = _byte_view(blob)
            head = bytes(view[: PREFIX.size + MAX_HEADER])
        if record_id.__class__ is not str or _RECORD_ID_OK(record_id) is None:
            return None
        last = self._last.get(data_class)  # most records of a class share its current data key
        if last is None or not head.startswith(last[0], PREFIX.size):
            last = self._learn(head, data_class)
            if last is None:
                return None
        template, known = last
        rid = record_id.encode("ascii")
        length = len(template) + _TAIL_LEN + len(rid)
        start, end = PREFIX.size + len(template), PREFIX.size + length
        if length > MAX_HEADER or (len(head) if view is None else len(view)) < end + TAG_LEN:
            return None
        nonce_b64, written_b = head[start : start + 16], head[end - 26 : end - 2]
        aad = _PREFIX_FORMAT % (length.to_bytes(4, "big"), template, nonce_b64, rid, written_b)
        if not head.startswith(aad):
            return None
        try:
            nonce = binascii.a2b_base64(nonce_b64, strict_mode=True)
            written = written_b.decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if len(nonce) != NONCE_LEN or (written not in self._written_ok and not self._valid_written(written)):
            return None
        fields = (data_class, record_id, known[1], known[2], nonce, known[3], written)
        return _new_tuple(Header, fields), aad, (memoryview(head) if view is None else view)[end:]

    def _learn(
        self, head: bytes, data_class: str
    ) -> tuple[bytes, tuple[str, str, bytes, str | None]] | None:
        """The known template (and its fields) this record's header starts with, if any."""
        found_at = head.find(_NONCE_KEY, PREFIX.size, PREFIX.size + MAX_HEADER)
        if found_at < 0:
            return None
        template = head[PREFIX.size : found_at + len(_NONCE_KEY)]
        known = self._known.get(template)
        if known is None or known[0] != data_class:
            return None
        self._last[data_class] = (template, known)
        return template, known

    def _valid_written(self, written: str) -> bool:
        """_valid_written, remembered: records sealed in the same millisecond share the value."""
        seen = self._written_ok
        if written in seen:
            return True
        if not _valid_written(written):
            return False
        if len(seen) >= DEFAULT_MAX_ENTRIES:
            seen.clear()
        seen.add(written)
        return True

    def _remember(self, header: Header) -> None:
        """Record a parsed header's template for _parse_known (bounded: cleared when full)."""
        known = self._known
        if len(known) >= DEFAULT_MAX_ENTRIES:
            known.clear()
        template = _template(header.data_class, header.e2e, _b64(header.edk), header.kms_key_arn)
        known[template] = (header.data_class, header.kms_key_arn, header.edk, header.e2e)

    def decrypt(
        self,
        blob: bytes | bytearray | memoryview,
        *,
        data_class: str,
        record_id: str,
        key_arn: str,
        region: str,
    ) -> Opened:
        """Open an envelope that must be record `record_id` of `data_class`; else refuse.

        The class and record id are checked before KMS is called; KMS then unwraps the data
        key only under this class's context (and key `key_arn`); GCM authenticates the rest.
        """
        fast = self._parse_known(blob, data_class, record_id)
        if fast is None:
            envelope = parse(blob, data_class, record_id)
            header = envelope.header
            if header.data_class != data_class or header.record_id != record_id:
                raise _wrong_record(data_class, record_id)
            self._remember(header)
            aad: bytes | memoryview = envelope.aad
            body = envelope.body
        else:
            header, aad, body = fast
        cache, cache_key = self.decrypt_cache, (data_class, header.edk)
        data_key = cache.peek(cache_key)
        if data_key is not None:
            aead = data_key.aead
            if aead is not None:
                try:
                    return _new_tuple(Opened, (header, aead.decrypt(header.nonce, body, aad)))
                except InvalidTag:
                    if data_key.aead is aead:  # the key was whole while in use: not authentic
                        raise _not_authentic(data_class, record_id) from None
                # Wiped while in use (DataKeyCache.hit): try again under a lease. (A success
                # needs no such check: a tag verifies only under the real key.)
        data_key = cache.checkout(
            cache_key,
            0,
            lambda: self._unwrap(header, data_class, record_id, key_arn, region),
            metered=False,
        )
        try:
            assert data_key.aead is not None
            plaintext = data_key.aead.decrypt(header.nonce, body, aad)
        except InvalidTag:
            raise _not_authentic(data_class, record_id) from None
        finally:
            cache.checkin(data_key)
        return Opened(header, plaintext)


def _byte_view(blob: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(blob)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")



_new_tuple = tuple.__new__  # builds a NamedTuple from a tuple without its Python-level __new__
# Records at most this size are sealed as prefix + AESGCM.encrypt (one small copy); larger ones
# are encrypted into a preallocated buffer (a second copy of a large body costs more than it saves).
_JOIN_MAX = 32 * 1024


def _seal(
    data_key: DataKey,
    aead: AESGCM,
    data_class: str,
    record_id: str,
    plaintext: bytes | bytearray | memoryview,
    size: int,
    e2e: str | None,
    written: str,
) -> bytes | bytearray:
    """The envelope of one record under `data_key` (fields already checked by the caller)."""
    template = data_key.templates.get((data_class, e2e))
    if template is None:  # the key ARN was checked when the data key was loaded
        template = _template(data_class, e2e, data_key.edk_b64, data_key.key_arn)
        data_key.templates[(data_class, e2e)] = template
    # never used before under this key: fixed field, then the invocation counter (DataKey)
    nonce = data_key.nonce_fixed + next(data_key.nonces).to_bytes(NONCE_COUNTER_LEN, "big")
    rid = record_id.encode("ascii")
    prefix = _PREFIX_FORMAT % (
        (len(template) + _TAIL_LEN + len(rid)).to_bytes(4, "big"),  # the header's length
        template,
        binascii.b2a_base64(nonce, newline=False),
        rid,
        written.encode("ascii"),
    )
    if size <= _JOIN_MAX:
        return prefix + aead.encrypt(nonce, plaintext, prefix)
    start = len(prefix)
    out = bytearray(start + size + TAG_LEN)
    out[:start] = prefix
    aead.encrypt_into(nonce, plaintext, prefix, memoryview(out)[start:])
    return out

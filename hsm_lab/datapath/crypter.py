"""EnvelopeCrypter: records sealed and opened as ``clefs.envelope/v2`` under cached KMS data keys.

The hot path (docs/datapath.md, "Throughput") is :meth:`EnvelopeCrypter.encrypt` /
:meth:`EnvelopeCrypter.decrypt` with a cached key: no lock, no KMS call.
"""

from __future__ import annotations

import binascii
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm_lab.datapath.envelope_format import (
    _NONCE_KEY,
    _PREFIX_FORMAT,
    _RECORD_ID_OK,
    _TAIL_LEN,
    E2E_MODES,
    MAX_HEADER,
    MAX_RECORD_BYTES,
    NONCE_COUNTER_LEN,
    NONCE_LEN,
    PREFIX,
    TAG_LEN,
    Header,
    KeyServiceError,
    _b64,
    _not_authentic,
    _template,
    _valid_written,
    _wrong_record,
    check_record_id,
    encryption_context,
    is_class_name,
    parse,
    written_now,
)
from hsm_lab.datapath.keycache import DEFAULT_MAX_ENTRIES, CacheLimits, DataKey, DataKeyCache
from hsm_lab.errors import InputError
from hsm_lab.fs import wipe

# KMS answers that mean "this wrapped key does not open under this key and context".
_NOT_AUTHENTIC_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})



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

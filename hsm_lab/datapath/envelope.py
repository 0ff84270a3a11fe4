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

The code: the format in :mod:`hsm_lab.datapath.envelope_format`, the data-key cache in
:mod:`hsm_lab.datapath.keycache`, the crypter in :mod:`hsm_lab.datapath.crypter`; this module
re-exports their names (the import path other code has always used).
"""

from __future__ import annotations

from hsm_lab.datapath.crypter import (
    EnvelopeCrypter,
    Opened,
)

# _HEADER_RE and _valid_written: read by tests (the class-name grammar, calendar checks)
from hsm_lab.datapath.envelope_format import (
    _HEADER_RE as _HEADER_RE,
)
from hsm_lab.datapath.envelope_format import (
    ALG,
    CLASS_RE,
    CONTEXT_KEY,
    E2E_AGE,
    E2E_MODES,
    FORMAT,
    HEADER_FIELDS,
    KEY_LEN,
    MAGIC,
    MAX_CLASS_LEN,
    MAX_EDK,
    MAX_HEADER,
    MAX_RECORD_BYTES,
    NONCE_COUNTER_LEN,
    NONCE_LEN,
    PREFIX,
    RECORD_ID_RE,
    TAG_LEN,
    VERSION,
    WRITTEN_RE,
    Envelope,
    Header,
    KeyServiceError,
    RecordAuthenticationError,
    check_record_id,
    encode_header,
    encryption_context,
    is_class_name,
    parse,
    read_header,
    written_now,
)
from hsm_lab.datapath.envelope_format import (
    _valid_written as _valid_written,
)
from hsm_lab.datapath.keycache import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_MESSAGES,
    GCM_RANDOM_NONCE_LIMIT,
    SMALL_RECORD,
    CacheLimits,
    CacheStats,
    DataKey,
    DataKeyCache,
)

__all__ = [
    "ALG",
    "CLASS_RE",
    "CONTEXT_KEY",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_MESSAGES",
    "E2E_AGE",
    "E2E_MODES",
    "FORMAT",
    "GCM_RANDOM_NONCE_LIMIT",
    "HEADER_FIELDS",
    "KEY_LEN",
    "MAGIC",
    "MAX_CLASS_LEN",
    "MAX_EDK",
    "MAX_HEADER",
    "MAX_RECORD_BYTES",
    "NONCE_COUNTER_LEN",
    "NONCE_LEN",
    "PREFIX",
    "RECORD_ID_RE",
    "SMALL_RECORD",
    "TAG_LEN",
    "VERSION",
    "WRITTEN_RE",
    "CacheLimits",
    "CacheStats",
    "DataKey",
    "DataKeyCache",
    "Envelope",
    "EnvelopeCrypter",
    "Header",
    "KeyServiceError",
    "Opened",
    "RecordAuthenticationError",
    "check_record_id",
    "encode_header",
    "encryption_context",
    "is_class_name",
    "parse",
    "read_header",
    "written_now",
]

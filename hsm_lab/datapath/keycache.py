"""The data-key cache: limits per key (age, messages, bytes), leases, wiping, lock-free hits.

See docs/datapath.md ("Data-key cache") for the limits and why the hot path stays exact.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm_lab.datapath.envelope_format import (
    _ARN_RE,
    KEY_LEN,
    NONCE_COUNTER_LEN,
    NONCE_LEN,
    KeyServiceError,
    _b64,
)
from hsm_lab.errors import InputError
from hsm_lab.fs import wipe

DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_MESSAGES = 4096
DEFAULT_MAX_BYTES = 1 << 32
GCM_RANDOM_NONCE_LIMIT = 1 << 32  # invocations per key with random 96-bit nonces
DEFAULT_MAX_ENTRIES = 1024
SMALL_RECORD = 64 * 1024  # largest record a cached key meters without the lock (DataKeyCache)


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

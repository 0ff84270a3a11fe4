"""The data-key cache: limits (injected clock), wiping, the lock-free hot path, counter nonces."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from hsm_lab.datapath import crypter as crypter_module
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath.envelope import (
    CacheLimits,
    DataKey,
    DataKeyCache,
    EnvelopeCrypter,
)
from hsm_lab.errors import InputError
from tests.datapath.support import (
    HOME,
    Deployment,
    FakeClock,
    stub_loader,
)


def test_cache_expires_by_messages() -> None:
    made: list[DataKey] = []
    cache = DataKeyCache(CacheLimits(max_messages=3), clock=FakeClock())
    used = []
    for _ in range(7):
        with cache.lease("k", 10, stub_loader(made), metered=True) as key:
            used.append(key.edk)
    assert len(made) == 3
    assert used == [b"edk-0"] * 3 + [b"edk-1"] * 3 + [b"edk-2"]
    assert made[0].key == bytearray(32) and made[1].key == bytearray(32)  # evicted: wiped
    assert made[2].key == bytearray(b"k" * 32)


def test_cache_expires_by_age_and_bytes() -> None:
    made: list[DataKey] = []
    clock = FakeClock()
    cache = DataKeyCache(CacheLimits(max_age_seconds=300, max_bytes=100), clock=clock)
    load = stub_loader(made)
    for _ in range(2):
        with cache.lease("k", 40, load, metered=True):
            pass
    assert len(made) == 1
    with cache.lease("k", 40, load, metered=True):  # 120 bytes > 100
        pass
    assert len(made) == 2
    clock.now += 299.9
    with cache.lease("k", 1, load, metered=True):
        pass
    assert len(made) == 2
    clock.now += 0.1  # 300 s old
    with cache.lease("k", 1, load, metered=True):
        pass
    assert len(made) == 3
    # unmetered (decrypt) leases ignore message/byte limits but not age
    for _ in range(10):
        with cache.lease("d", 10**9, load, metered=False):
            pass
    assert len(made) == 4
    clock.now += 301
    with cache.lease("d", 0, load, metered=False):
        pass
    assert len(made) == 5


def test_cache_never_wipes_a_key_in_use() -> None:
    made: list[DataKey] = []
    cache = DataKeyCache(CacheLimits(max_messages=1), clock=FakeClock())
    load = stub_loader(made)
    with cache.lease("k", 1, load, metered=True) as first:
        with cache.lease("k", 1, load, metered=True):  # retires `first` while it is leased
            pass
        assert first.key == bytearray(b"k" * 32) and first.aead is not None
    assert first.key == bytearray(32) and first.aead is None
    cache.clear()
    assert len(cache) == 0 and all(k.key == bytearray(32) for k in made)


def test_hot_path_limits_are_exact_under_threads() -> None:
    """hit() takes no lock: messages are atomic tickets and lock-free bytes stay inside the
    reserve the locked path keeps free, so no key ever goes past a limit, whatever the threads."""
    made: list[DataKey] = []
    limits = CacheLimits(max_messages=64, max_bytes=64 * 16 * 100)  # small_record = 100 bytes
    cache = DataKeyCache(limits, clock=FakeClock())
    assert (cache.small_record, cache.reserve) == (100, 6400)
    load = stub_loader(made)
    used: dict[bytes, list[int]] = {}
    lock = threading.Lock()

    def work(seed: int) -> None:
        for i in range(400):
            size = 5000 if (seed + i) % 7 == 0 else 100
            key = cache.hit("k", size)
            if key is None:
                with cache.lease("k", size, load, metered=True) as leased:
                    key = leased
            with lock:
                used.setdefault(key.edk, []).append(size)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(sizes) for sizes in used.values()) == 8 * 400
    assert all(len(sizes) <= 64 for sizes in used.values())
    assert all(sum(sizes) <= limits.max_bytes for sizes in used.values())
    assert len(made) >= 8 * 400 // 64


def test_hot_path_refuses_what_the_locked_path_would() -> None:
    made: list[DataKey] = []
    clock = FakeClock()
    cache = DataKeyCache(CacheLimits(max_messages=3), clock=clock)
    assert cache.hit("k", 10) is None  # nothing cached yet
    with cache.lease("k", 10, stub_loader(made), metered=True):
        pass
    assert cache.hit("k", 10) is made[0] and cache.hit("k", 10) is made[0]
    assert cache.hit("k", 10) is None, "a fourth message under a 3-message key"
    assert cache.hit("k", cache.small_record + 1) is None, "large records go through the lock"
    with cache.lease("k", 10, stub_loader(made), metered=True):  # retires the spent key
        pass
    assert len(made) == 2 and made[0].key == bytearray(32)
    clock.now += 300
    assert cache.hit("k", 10) is None and cache.peek("k") is None, "too old"


def test_counter_nonces_are_unique_per_data_key() -> None:
    """SP 800-38D 8.2.1: a random 32-bit fixed field per data key, then a 64-bit counter."""
    key = DataKey(bytearray(b"k" * 32), b"edk", "arn:test")
    nonces: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(500):
            blob = crypter_module._seal(key, key.aead, "c-1", "r1", b"x", 1, None, env.written_now())
            with lock:
                nonces.append(env.parse(blob).header.nonce)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(nonces)) == len(nonces) == 4000
    assert {n[:4] for n in nonces} == {key.nonce_fixed} and len(key.nonce_fixed) == 4
    assert sorted(int.from_bytes(n[4:], "big") for n in nonces) == list(range(4000))


class WipedInUse:
    """An AESGCM stand-in whose key is retired and wiped while in use: what another thread
    clearing the cache would do between DataKeyCache.hit/peek and the end of the operation."""

    def __init__(self, cache: DataKeyCache) -> None:
        (self.data_key,) = cache._entries.values()
        self.cache, self.real = cache, self.data_key.aead
        self.data_key.aead = self  # type: ignore[assignment]

    def encrypt(self, *args: Any) -> bytes:
        out = self.real.encrypt(*args)
        self.cache.clear()
        assert self.data_key.aead is None and self.data_key.key == bytearray(32)
        return out

    def decrypt(self, *args: Any) -> bytes:
        self.cache.clear()
        raise InvalidTag  # as a build that reads the (now zeroed) key buffer would


def test_a_key_wiped_while_in_use_on_the_hot_path_is_not_used(deployment: Deployment) -> None:
    arn = deployment.target("appointments")["key_arn"]
    crypter = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    first = crypter.encrypt("appointments", "w-1", b"one", key_arn=arn, region=HOME)
    WipedInUse(crypter.encrypt_cache)
    second = crypter.encrypt("appointments", "w-2", b"two", key_arn=arn, region=HOME)
    assert crypter.kms_calls == {("generate_data_key", HOME): 2}, "sealed again under a new key"
    assert env.parse(second).header.edk != env.parse(first).header.edk
    reader = EnvelopeCrypter.with_limits(lambda region: deployment.factory("kms", region))
    assert reader.decrypt(second, data_class="appointments", record_id="w-2", key_arn=arn, region=HOME)
    WipedInUse(reader.decrypt_cache)
    opened = reader.decrypt(second, data_class="appointments", record_id="w-2", key_arn=arn, region=HOME)
    assert opened.plaintext == b"two"
    assert reader.kms_calls == {("decrypt", HOME): 2}, "unwrapped again, not refused"


def test_cache_limits_are_validated() -> None:
    for bad in ({"max_messages": 0}, {"max_messages": 2**32 + 1}, {"max_age_seconds": 0}, {"max_bytes": 0}):
        with pytest.raises(InputError):
            CacheLimits(**bad)


def test_crypter_cache_limits_against_kms(deployment: Deployment) -> None:
    clock = FakeClock()
    crypter = EnvelopeCrypter.with_limits(
        lambda region: deployment.factory("kms", region), CacheLimits(max_messages=5), clock=clock
    )
    arn = deployment.target("appointments")["key_arn"]
    blobs = [crypter.encrypt("appointments", f"r{i}", b"x", key_arn=arn, region=HOME) for i in range(12)]
    assert crypter.kms_calls == {("generate_data_key", HOME): 3}
    assert len({env.parse(b).header.edk for b in blobs}) == 3
    for i, blob in enumerate(blobs):
        crypter.decrypt(blob, data_class="appointments", record_id=f"r{i}", key_arn=arn, region=HOME)
    assert crypter.kms_calls[("decrypt", HOME)] == 3
    clock.now += 301  # every cached key is now too old
    crypter.encrypt("appointments", "r-late", b"x", key_arn=arn, region=HOME)
    crypter.decrypt(blobs[0], data_class="appointments", record_id="r0", key_arn=arn, region=HOME)
    assert crypter.kms_calls == {("generate_data_key", HOME): 4, ("decrypt", HOME): 4}

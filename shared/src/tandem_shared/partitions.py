"""Kafka's default partitioner for a whole batch of keys at once.

A keyed record goes to partition ``(murmur2(key) & 0x7fffffff) % partitions``, as the Java
client and aiokafka place it, so every producer sends a task's records to the same partition.
aiokafka hashes one key at a time in pure Python, about 2 µs a record; here the keys of a batch
are hashed together in numpy, whose uint32 arithmetic wraps as the Java int arithmetic does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> NDArray[np.uint32]:
    """Kafka's murmur2 of each key, as an unsigned 32-bit number."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    for length, rows in by_length.items():
        joined = b"".join([keys[i] for i in rows])
        data = np.frombuffer(joined, dtype=np.uint8).reshape(len(rows), length)
        out[rows] = _same_length(data)
    return out


def partition_indices(keys: Sequence[bytes], partitions: int) -> list[int]:
    """For each key, the index of its partition among ``partitions`` sorted by id."""
    indices: list[int] = ((murmur2(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()
    return indices


def _same_length(data: NDArray[np.uint8]) -> NDArray[np.uint32]:
    rows, length = data.shape
    h = np.full(rows, (_SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    whole = length - length % 4
    # Each 4 bytes as a little-endian word, as the Java code assembles them.
    words = np.ascontiguousarray(data[:, :whole]).view("<u4").astype(np.uint32)
    for j in range(whole // 4):
        k = words[:, j] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h *= _M
        h ^= k
    tail = data[:, whole:].astype(np.uint32)
    extra = length % 4
    if extra >= 3:
        h ^= tail[:, 2] << np.uint32(16)
    if extra >= 2:
        h ^= tail[:, 1] << np.uint32(8)
    if extra >= 1:
        h ^= tail[:, 0]
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h

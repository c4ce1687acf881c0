"""Records go to the partitions Kafka's default partitioner gives their keys."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as one_key
from hypothesis import given
from hypothesis import strategies as st
from tandem_shared.partitions import murmur2, partition_indices


def _signed(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


def test_murmur2_gives_the_java_clients_values() -> None:
    # The values of Kafka's own tests of Utils.murmur2 (as Java ints).
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"abc": 479470107,
    }
    assert [_signed(h) for h in murmur2(list(cases)).tolist()] == list(cases.values())


@given(
    keys=st.lists(st.binary(max_size=40), max_size=60),
    partitions=st.integers(min_value=1, max_value=64),
)
def test_a_batch_goes_where_the_producer_would_put_each_record(
    keys: list[bytes], partitions: int
) -> None:
    assert murmur2(keys).tolist() == [one_key(k) & 0xFFFFFFFF for k in keys]
    ids = list(range(partitions))
    assert partition_indices(keys, partitions) == [DefaultPartitioner()(k, ids, ids) for k in keys]

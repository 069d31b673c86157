import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddc._core.records import (BATCH_HEADER_BYTES, batch_header, batch_taken_in_ns, decode_batch, decode_records,
                               encode_batch, encoded_size)

records_strategy = st.lists(st.tuples(st.binary(max_size=64), st.binary(max_size=2000)), max_size=50)


@given(records_strategy)
def test_batch_round_trip(records):
    batch = encode_batch(records)
    assert len(batch) == encoded_size(records)
    assert decode_batch(batch) == records
    assert decode_batch(memoryview(batch)) == records


def test_empty_batch_and_empty_records():
    assert decode_batch(encode_batch([])) == []
    assert decode_batch(encode_batch([(b"", b"")])) == [(b"", b"")]


@given(records_strategy.filter(bool), st.data())
def test_truncated_batches_are_rejected(records, data):
    batch = encode_batch(records)
    cut = data.draw(st.integers(0, len(batch) - 1))
    with pytest.raises(ValueError):
        decode_batch(batch[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=500))
def test_random_bytes_raise_value_error_or_decode_consistently(data):
    try:
        records = decode_batch(data)
    except ValueError:
        return
    assert encode_batch(records) == data


def test_a_count_larger_than_the_batch_is_rejected_without_allocating():
    forged = bytes([1, 0, 0, 0]) + (0xFFFFFFFF).to_bytes(4, "big") + bytes(8)
    assert len(forged) == BATCH_HEADER_BYTES
    with pytest.raises(ValueError, match="announces"):
        decode_batch(forged)


def test_the_taken_in_time_travels_with_the_batch():
    batch = encode_batch([(b"m", b"v")], 1_790_000_000_123_456_789)
    assert batch_taken_in_ns(batch) == 1_790_000_000_123_456_789
    assert batch_taken_in_ns(encode_batch([])) == 0
    with pytest.raises(ValueError):
        batch_taken_in_ns(b"short")


def test_value_views_are_the_values_without_a_copy():
    records = [(b"m", b"value"), (b"", b""), (b"meta", bytes(range(256)))]
    batch = encode_batch(records)
    decoded = decode_batch(batch, value_views=True)
    assert [(metadata, bytes(value)) for metadata, value in decoded] == records
    assert all(isinstance(value, memoryview) and value.obj is batch and value.readonly for _, value in decoded)


@given(records_strategy, st.integers(0, 2**63))
def test_a_header_before_a_run_of_records_is_their_batch(records, taken_in_ns):
    batch = encode_batch(records, taken_in_ns)
    run = batch[BATCH_HEADER_BYTES:]
    assert batch_header(len(records), taken_in_ns) + run == batch
    assert decode_records(run, len(records)) == records
    if records:
        with pytest.raises(ValueError):
            decode_records(run[:-1] if run else b"", len(records) + 1)

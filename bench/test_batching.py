"""Record batching: the Cython codec against a pure-Python codec of the same format, same run.

Run with `make bench`. The figure that matters is the ratio printed at the end,
not the absolute times (this machine is shared and noisy).
"""

import struct

import pytest

from ddc._core.records import decode_batch, encode_batch

RECORDS = [(b"10.0.0.1:514", bytes([i % 251]) * 100) for i in range(10_000)]
results = {}


def python_encode(records):
    parts = [struct.pack(">B3xIQ", 1, len(records), 0)]
    for metadata, value in records:
        parts.append(struct.pack(">II", len(metadata), len(value)))
        parts.append(metadata)
        parts.append(value)
    return b"".join(parts)


def python_decode(batch):
    (count,) = struct.unpack_from(">I", batch, 4)
    position, records = 16, []
    for _ in range(count):
        meta_length, value_length = struct.unpack_from(">II", batch, position)
        position += 8
        records.append((batch[position:position + meta_length],
                        batch[position + meta_length:position + meta_length + value_length]))
        position += meta_length + value_length
    return records


@pytest.mark.parametrize("codec", ["python", "ddc"])
def test_round_trip_10k_records(benchmark, codec):
    encode, decode = (python_encode, python_decode) if codec == "python" else (encode_batch, decode_batch)
    assert python_encode(RECORDS) == encode_batch(RECORDS)
    result = benchmark(lambda: decode(encode(RECORDS)))
    assert result == RECORDS
    results[codec] = benchmark.stats.stats.median


def test_report_ratio():
    if len(results) < 2:
        pytest.skip("run the whole file")
    ratio = results["python"] / results["ddc"]
    records_per_second = len(RECORDS) / results["ddc"]
    print(f"\nbatching: ddc {records_per_second:,.0f} records/s round trip, {ratio:.1f}x the pure-Python codec")
    assert ratio > 1.0, "the Cython codec must beat the pure-Python one it replaces"

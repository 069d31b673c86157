"""The Kafka listener's fuzz target, shared by the fuzzer (fuzz/listener_fuzz.py) and the suite's replay of its seeds
and crashers (tests/test_fuzz_regressions.py): what a producer's connection can send.

The first byte chooses what the rest is: even, one request frame (its size prefix removed) for
protocol.read_request, and for a Produce request every partition's records through read_batches and
pack_records, as the listener reads them (compressed ones inflated); odd, one partition's `records` field
straight away (the batch reader without the request around it). With bit 1 set too, every batch's CRC-32C is
made right first, as a forger would: otherwise nearly every mutation inside a batch ends at the checksum.
Anything but ProtocolError and BatchError, a crash, or a sanitizer report is a finding; so is a packed batch
whose records do not number what its header said.
"""

import struct
from pathlib import Path

import crc32c

from ddc.handlers.kafka_listener import protocol
from ddc.handlers.kafka_listener.batches import BatchError, pack_records, read_batches
from ddc.handlers.kafka_listener.listener import batch_payload
from ddc.handlers.kafka_listener.protocol import ProtocolError

TOPIC_ID = bytes(range(16))
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_corpus" / "listener"
REGRESSIONS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_regressions" / "listener"


def read_records(records) -> None:
    for start, end, attributes, _, base_timestamp, max_timestamp, _, _, _, count in read_batches(records):
        payload = batch_payload(records, start, end, attributes, 1 << 20)
        packed = pack_records(payload, count, b"fuzz", 0, 0, -1, 0, attributes, base_timestamp, max_timestamp, 1,
                              TOPIC_ID, 1 << 20)
        if len(packed.records()) != count:
            raise AssertionError(f"{len(packed.records())} records packed of {count}")


def with_right_crcs(records: bytes) -> bytes:
    """Each batch's CRC-32C computed over what follows it, as far as the batch lengths lead."""
    fixed = bytearray(records)
    position = 0
    while position + 61 <= len(fixed):
        end = position + 12 + struct.unpack_from(">i", fixed, position + 8)[0]
        if end > len(fixed) or end < position + 61:
            break
        struct.pack_into(">I", fixed, position + 17, crc32c.crc32c(bytes(fixed[position + 21:end])))
        position = end
    return bytes(fixed)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] & 1:
            read_records(with_right_crcs(data[1:]) if data[0] & 2 else data[1:])
            return
        request = protocol.read_request(data[1:])
        if request.api_key == protocol.PRODUCE:
            for topic in request.body.topic_data:
                for partition in topic.partition_data:
                    if partition.records is not None:
                        try:
                            read_records(partition.records)
                        except BatchError:
                            pass
    except (ProtocolError, BatchError):
        pass

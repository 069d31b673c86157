"""The Kafka listener's fuzz target, shared by the fuzzer (fuzz/listener_fuzz.py) and the suite's replay of its seeds
and crashers (tests/test_fuzz_regressions.py): what a producer's connection can send.

The first byte chooses what the rest is: even, one request frame (its size prefix removed) for
protocol.read_request, and for a Produce request every partition's records through read_batches and
pack_records, as the listener reads them (compressed ones inflated); odd, one partition's `records` field
straight away (the batch reader without the request around it). Anything but ProtocolError and BatchError, a
crash, or a sanitizer report is a finding; so is a packed batch whose records do not number what its header
said.
"""

from pathlib import Path

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


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        if data[0] & 1:
            read_records(data[1:])
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

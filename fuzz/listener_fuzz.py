#!/usr/bin/env python3
"""The atheris (libFuzzer) entry point for the Kafka listener's parsers: what a producer's connection can send.

    . fuzz/env.sh sanitized && python fuzz/listener_fuzz.py [libFuzzer options] [corpus folders]

The first byte chooses what the rest is: even, one request frame (its size prefix removed) for
protocol.read_request, and for a Produce request every partition's records through read_batches and
pack_records, as the listener reads them; odd, one partition's `records` field straight away (the batch reader
without the request around it). Anything but ProtocolError and BatchError, a crash, or a sanitizer report is a
finding; so is a packed batch whose records do not number what its header said.
"""

import sys

import atheris

with atheris.instrument_imports(include=["ddc"]):
    from ddc.handlers.kafka_listener import protocol
    from ddc.handlers.kafka_listener.batches import BATCH_HEADER_BYTES, BatchError, pack_records, read_batches
    from ddc.handlers.kafka_listener.protocol import ProtocolError

TOPIC_ID = bytes(range(16))


def read_records(records) -> None:
    for start, end, attributes, _, base_timestamp, max_timestamp, _, _, _, count in read_batches(records):
        packed = pack_records(memoryview(records)[start + BATCH_HEADER_BYTES:end], count, b"fuzz", 0, 0, -1, 0,
                              attributes, base_timestamp, max_timestamp, 1, TOPIC_ID, 1 << 20)
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


if __name__ == "__main__":
    protocol.load_every_version()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

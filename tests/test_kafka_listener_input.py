"""The Kafka listener against hostile and broken input (#23): hand-made requests over raw sockets to a real `ddc run`
ingress, and the record-batch reader against batches kio writes (an implementation independent of ours)."""

import collections
import datetime
import io
import random
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from kio.index import load_payload_module
from kio.records.schema import NewRecordBatch, Record, RecordHeader
from kio.records.writers import write_new_batch
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from conftest import certificate_authority, udp_receiver
from kafka_harness import listener_pair_configs
from ddc.handlers.kafka import codec
from ddc.handlers.kafka_listener import protocol
from ddc.handlers.kafka_listener.batches import BatchError, pack_records, read_batches
from ddc.transport.sockets import free_tcp_port

EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def batch_bytes(records: list, producer_id: int = -1, epoch: int = -1, sequence: int = -1,
                attributes: int = 0) -> bytes:
    """records: (key, value, headers) with headers as (str, bytes | None)."""
    buffer = io.BytesIO()
    write_new_batch(buffer, NewRecordBatch(
        producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence, attributes=attributes,
        records=tuple(Record(attributes=0, timestamp=EPOCH + datetime.timedelta(milliseconds=index), offset=index,
                             key=key, value=value,
                             headers=tuple(RecordHeader(key=name.encode(), value=data) for name, data in headers))
                      for index, (key, value, headers) in enumerate(records))))
    return buffer.getvalue()


def pack(data: bytes, max_record_size: int = 1 << 20) -> list:
    (start, end, attributes, _, base_timestamp, max_timestamp, _, _, _, count), = read_batches(data)
    return pack_records(memoryview(data)[start + 61:end], count, b"topic", 4, 100, 99, 0, attributes,
                        base_timestamp, max_timestamp, 7, bytes(range(16)), max_record_size).records()


records_strategy = st.lists(st.tuples(
    st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=200),
    st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=20)), max_size=4)), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(records_strategy)
def test_every_field_of_every_record_kio_writes_is_read_back(records):
    packed = pack(batch_bytes(records))
    assert len(packed) == len(records)
    for index, ((metadata, value), (key, expected_value, headers)) in enumerate(zip(packed, records)):
        fields = codec.unpack(metadata)
        assert fields[0] == codec.RECORD
        assert fields[1:5] == ("topic", 4, 100 + index, 99 if index == 0 else 99 + index)
        assert fields[7] == int(EPOCH.timestamp() * 1000) + index
        assert fields[8] == key
        assert [(name, data) for name, data in fields[9]] == headers
        assert (value if fields[10] else None) == expected_value
        assert fields[11:] == (7, bytes(range(16)))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_strategy, st.data())
def test_a_damaged_batch_is_refused_with_a_kafka_error_code_never_a_crash(records, data):
    batch = bytearray(batch_bytes(records))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(batch) - 1))
        batch[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(batch)))
    batch = bytes(batch[:cut]) if data.draw(st.booleans()) else bytes(batch)
    try:
        batches = read_batches(batch)
        for start, end, attributes, _, base_timestamp, max_timestamp, _, _, _, count in batches:
            # Past the CRC (a damaged header field it does not cover, or a lucky collision): the records are read.
            pack_records(memoryview(batch)[start + 61:end], count, b"t", 0, 0, -1, 0, attributes, base_timestamp,
                         max_timestamp, 1, None, 1 << 20)
    except BatchError as error:
        assert error.code in (2, 10, 87)


def test_crafted_records_that_pass_the_crc_are_refused_by_their_fields():
    """The CRC covers what a forger computes it over: each malformation is checked on its own."""
    good = batch_bytes([(b"k", b"v", [("h", b"x")])])
    header, body = good[:61], good[61:]

    def forged(records_body: bytes, count: int = 1) -> bytes:
        import crc32c
        after_crc = bytearray(header[21:] + records_body)
        after_crc[57 - 21:61 - 21] = struct.pack(">i", count)
        length = struct.pack(">i", len(after_crc) + 9)
        return header[:8] + length + header[12:17] + struct.pack(">I", crc32c.crc32c(bytes(after_crc))) + \
            bytes(after_crc)

    def varint(number: int) -> bytes:
        raw, out = (number << 1) ^ (number >> 63), b""
        while True:
            byte = raw & 0x7F
            raw >>= 7
            if raw:
                out += bytes([byte | 0x80])
            else:
                return out + bytes([byte])

    def record(fields: bytes) -> bytes:
        return varint(len(fields)) + fields

    cases = {
        "huge key length": (record(b"\0" + varint(0) + varint(0) + varint(1 << 40)), 2),
        "negative header count": (record(b"\0" + varint(0) + varint(0) + varint(-1) + varint(-1) + varint(-5)), 2),
        "wrong offset delta": (record(b"\0" + varint(0) + varint(3) + varint(-1) + varint(-1) + varint(0)), 87),
        "header name not UTF-8": (record(b"\0" + varint(0) + varint(0) + varint(-1) + varint(-1) + varint(1)
                                         + varint(2) + b"\xff\xfe" + varint(-1)), 87),
        "a varint of 11 bytes": (record(b"\0" + b"\xff" * 10 + b"\x01"), 2),
        "bytes after the records": (body + b"\0", 2),
        "fewer records than counted": (body, 2, 2),
    }
    for name, case in cases.items():
        records_body, code = case[0], case[1]
        count = case[2] if len(case) > 2 else 1
        data = forged(records_body, count)
        with pytest.raises(BatchError) as refused:
            pack(data)
        assert refused.value.code == code, name
    with pytest.raises(BatchError) as refused:
        pack(good, max_record_size=2)
    assert refused.value.code == 10


# ---- requests over the wire ----


class RawClient:
    """A Kafka client made of a socket and kio, for requests no well-behaved client sends."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_hostname="127.0.0.1")
        self.correlation = 0

    def send_raw(self, data: bytes) -> None:
        self.socket.sendall(data)

    def request(self, api_key: int, version: int, body) -> object:
        request_class = type(body)
        header_class = request_class.__header_schema__
        buffer = io.BytesIO()
        self.correlation += 1
        entity_writer(header_class)(buffer, header_class(request_api_key=api_key, request_api_version=version,
                                                         correlation_id=self.correlation, client_id="raw"))
        entity_writer(request_class)(buffer, body)
        frame = buffer.getvalue()
        self.socket.sendall(struct.pack(">i", len(frame)) + frame)
        return self.response(api_key, version)

    def response(self, api_key: int, version: int):
        size = struct.unpack(">i", self.read(4))[0]
        frame = self.read(size)
        response_class = next(value for value in vars(load_payload_module(api_key, version, EntityType.response))
                              .values() if getattr(value, "__type__", None) is EntityType.response)
        header, used = entity_reader(response_class.__header_schema__)(memoryview(frame), 0)
        assert header.correlation_id == self.correlation
        return entity_reader(response_class)(memoryview(frame), used)[0]

    def read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def closed(self, within: float = 5.0) -> bool:
        self.socket.settimeout(within)
        try:
            return self.socket.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.socket.close()


def produce_request(version: int, topic: str, partition: int, records: bytes, acks: int = -1):
    module = load_payload_module(0, version, EntityType.request)
    return module.ProduceRequest(transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=5),
                                 topic_data=(module.TopicProduceData(name=topic, partition_data=(
                                     module.PartitionProduceData(index=partition, records=records),)),))


def api_versions_request(version: int):
    module = load_payload_module(18, version, EntityType.request)
    fields = module.ApiVersionsRequest.__dataclass_fields__
    return module.ApiVersionsRequest(**({"client_software_name": "raw", "client_software_version": "1"}
                                        if "client_software_name" in fields else {}))


@pytest.fixture
def lone_ingress(start_ddc, tmp_path):
    """An ingress with a Kafka listener whose link sends into a socket nobody reads."""
    receiver = udp_receiver()
    port = free_tcp_port()
    config, _ = listener_pair_configs(port, receiver.getsockname()[1], tmp_path / "state", {"known": 2, "wide": 200},
                                      "unused",
                                      source_extra='max_request_size = "1MiB"\nmax_record_size = "1KiB"\n'
                                                   'max_connections = 20\nidle_timeout = "2s"\nrequest_timeout = "1s"')
    ingress = start_ddc("ingress", config)
    ingress.wait_for(lambda line: "Kafka listener on" in line.get("message", ""))
    yield ingress, port
    receiver.close()


def test_broken_requests_close_their_connection_and_are_counted_while_other_clients_are_served(lone_ingress):
    ingress, port = lone_ingress
    healthy = RawClient(port)
    assert healthy.request(18, 3, api_versions_request(3)).error_code == 0

    cases = {
        "garbage": (random.Random(1).randbytes(4000), "malformed"),  # its first four bytes: a negative size
        "a huge size": (struct.pack(">i", 0x7FFFFFFF) + b"x" * 100, "oversized"),
        "a negative size": (struct.pack(">i", -5), "malformed"),
        "a request too short for its header": (struct.pack(">i", 3) + b"abc", "malformed"),
        "Fetch, which a producer never sends": (struct.pack(">ihhi", 8, 1, 12, 1), "unsupported"),
        "an API key nobody has": (struct.pack(">ihhih", 10, 999, 0, 1, -1), "unsupported"),
        "Produce v2 (message format v1)": (struct.pack(">ihhih", 10, 0, 2, 1, -1), "unsupported"),
        "a header cut inside its client id": (struct.pack(">ihhih", 10, 3, 1, 1, 200), "malformed"),
    }
    for name, (data, reason) in cases.items():
        client = RawClient(port)
        client.send_raw(data)
        assert client.closed(), f"{name}: the connection stayed open"
        client.close()
        assert healthy.request(18, 3, api_versions_request(3)).error_code == 0, f"{name} harmed another client"
    # A client that stops inside a request is closed after request_timeout; one that sends nothing after
    # idle_timeout.
    slow, idle = RawClient(port), RawClient(port)
    slow.send_raw(struct.pack(">i", 100) + b"\0\x12")
    started = time.monotonic()
    assert slow.closed(within=5.0) and time.monotonic() - started < 3.0
    assert idle.closed(within=5.0)
    assert healthy.closed(within=0.1), "idle for longer than idle_timeout"
    assert RawClient(port).request(3, 12, load_payload_module(3, 12, EntityType.request).MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)).topics[0].name \
        == "known"
    stats = ingress.wait_for(lambda line: line.get("event") == "link stats"
                             and line.get("kafka_listener_connections_closed_slow") == 1
                             and line.get("kafka_listener_connections_closed_idle", 0) >= 1)
    expected = collections.Counter(reason for _, reason in cases.values())
    assert {reason: stats[f"kafka_listener_connections_closed_{reason}"] for reason in expected} == expected
    assert ingress.process.poll() is None
    assert ingress.unparsed_or_tracebacks() == []


def test_an_unknown_api_versions_version_is_answered_in_v0_with_what_the_listener_speaks(lone_ingress):
    _, port = lone_ingress
    client = RawClient(port)
    header = struct.pack(">hhih", 18, 77, 1, 3) + b"raw"
    client.send_raw(struct.pack(">i", len(header)) + header + b"\0" * 3)
    client.correlation = 1
    answer = client.response(18, 0)
    assert answer.error_code == 35
    versions = {api.api_key: (api.min_version, api.max_version) for api in answer.api_keys}
    assert versions[0] == (3, 12) and versions[18] == (0, 4) and versions[22] == (0, 5)


def test_bad_batches_get_their_kafka_errors_and_good_ones_in_the_same_connection_go_through(lone_ingress):
    ingress, port = lone_ingress
    client = RawClient(port)
    good = batch_bytes([(b"k", b"v", [])])
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    too_large = batch_bytes([(None, b"x" * 2000, [])])
    answers = {}
    for name, topic, partition, records in (("corrupt", "known", 0, bytes(corrupt)),
                                            ("unknown topic", "unknown", 0, good),
                                            ("unknown partition", "known", 2, good),
                                            ("too large", "known", 0, too_large),
                                            ("two batches", "known", 0, good + good),
                                            ("no records", "known", 0, None),
                                            ("good", "known", 1, good)):
        response = client.request(0, 9, produce_request(9, topic, partition, records))
        answers[name] = (response.responses[0].partition_responses[0].error_code,
                         response.responses[0].partition_responses[0].base_offset)
    assert answers == {"corrupt": (2, -1), "unknown topic": (3, -1), "unknown partition": (3, -1),
                       "too large": (10, -1), "two batches": (87, -1), "no records": (87, -1), "good": (0, 0)}
    stats = ingress.wait_for(lambda line: line.get("event") == "link stats"
                             and line.get("kafka_listener_records_in") == 1)
    assert stats["kafka_listener_produce_errors_corrupt_message"] == 1
    assert stats["kafka_listener_produce_errors_unknown_topic_or_partition"] == 2
    assert stats["kafka_listener_produce_errors_invalid_record"] == 2


def test_sequences_out_of_order_and_old_epochs_are_refused_and_retries_answered_with_their_offsets(lone_ingress):
    _, port = lone_ingress
    client = RawClient(port)
    module = load_payload_module(22, 4, EntityType.request)
    producer = client.request(22, 4, module.InitProducerIdRequest(
        transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60)))
    producer_id, epoch = producer.producer_id, producer.producer_epoch
    assert producer.error_code == 0 and producer_id >= 0

    def send(sequence: int, count: int = 2, producer_epoch: int = epoch):
        records = batch_bytes([(None, f"{sequence}-{index}".encode(), []) for index in range(count)],
                              producer_id, producer_epoch, sequence)
        answer = client.request(0, 11, produce_request(11, "known", 0, records)).responses[0].partition_responses[0]
        return answer.error_code, answer.base_offset

    assert send(0) == (0, 0)
    assert send(2) == (0, 2)
    assert send(0) == (0, 0), "a retry of the first batch is answered with its offset"
    assert send(2) == (0, 2)
    assert send(7)[0] == 45, "a gap in the sequence"
    assert send(4) == (0, 4)
    bumped = client.request(22, 4, module.InitProducerIdRequest(
        transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60), producer_id=producer_id,
        producer_epoch=epoch))
    assert (bumped.producer_id, bumped.producer_epoch) == (producer_id, epoch + 1)
    assert send(0, producer_epoch=epoch + 1) == (0, 6)
    assert send(6)[0] == 47
    assert send(3, producer_epoch=epoch + 2)[0] == 45, "a new epoch starts at sequence 0"
    transactional = client.request(22, 4, module.InitProducerIdRequest(
        transactional_id=f"tx-{uuid.uuid4().hex}", transaction_timeout=datetime.timedelta(seconds=60)))
    assert transactional.error_code == 53


def test_acks_zero_gets_no_answer_and_connections_beyond_the_limit_are_refused(lone_ingress):
    ingress, port = lone_ingress
    client = RawClient(port)
    module_request = produce_request(9, "known", 0, batch_bytes([(None, b"fire and forget", [])]), acks=0)
    buffer = io.BytesIO()
    header_class = type(module_request).__header_schema__
    entity_writer(header_class)(buffer, header_class(request_api_key=0, request_api_version=9, correlation_id=41,
                                                     client_id="raw"))
    entity_writer(type(module_request))(buffer, module_request)
    client.send_raw(struct.pack(">i", len(buffer.getvalue())) + buffer.getvalue())
    # The next answer is the ApiVersions one: nothing came for the produce request.
    assert client.request(18, 3, api_versions_request(3)).error_code == 0
    others = [RawClient(port) for _ in range(25)]
    time.sleep(0.5)
    refused = sum(other.closed(within=0.01) for other in others)  # well within idle_timeout
    assert refused == 25 - 19  # 20 connections at most, the first client's among them
    stats = ingress.wait_for(lambda line: line.get("event") == "link stats"
                             and line.get("kafka_listener_connections_closed_limit") == 6)
    assert stats["kafka_listener_records_in"] == 1


def test_tls_handshakes_hold_a_place_among_max_connections_for_request_timeout_and_failed_ones_are_counted(
        start_ddc, tmp_path):
    """A client that opens a connection and never finishes its TLS handshake takes one of max_connections, for
    request_timeout at most; a handshake refused for want of a certificate client_ca signed is counted and
    logged with its peer, a health check's connect and close is not; a producer with a certificate is served."""
    ca, certificate, key = certificate_authority(tmp_path, "listener")
    client_ca, client_certificate, client_key = certificate_authority(tmp_path, "producer")
    receiver = udp_receiver()
    port = free_tcp_port()
    config, _ = listener_pair_configs(port, receiver.getsockname()[1], tmp_path / "state", {"known": 1}, "unused",
                                      source_extra=f'max_connections = 4\nrequest_timeout = "3s"\n'
                                                   f'[links.front.source.tls]\ncertificate = "{certificate}"\n'
                                                   f'key = "{key}"\nclient_ca = "{client_ca}"')
    ingress = start_ddc("ingress", config)
    ingress.wait_for(lambda line: "Kafka listener on" in line.get("message", ""))
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    opened = time.monotonic()
    beyond = RawClient(port)
    assert beyond.closed(within=2.0), "a fifth connection was taken while four handshakes were under way"
    assert time.monotonic() - opened < 2.5
    for connection in silent:
        connection.settimeout(10)
        assert connection.recv(1) == b""
    assert time.monotonic() - opened >= 2.5, "a handshake was given up before request_timeout"
    probe = socket.create_connection(("127.0.0.1", port))  # a TCP health check: no TLS failure of anyone's
    probe.close()
    without_certificate = ssl.create_default_context(cafile=ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        RawClient(port, without_certificate).request(18, 3, api_versions_request(3))
    with_certificate = ssl.create_default_context(cafile=ca)
    with_certificate.load_cert_chain(client_certificate, client_key)
    assert RawClient(port, with_certificate).request(18, 3, api_versions_request(3)).error_code == 0
    stats = ingress.wait_for(lambda line: line.get("event") == "link stats"
                             and line.get("kafka_listener_connections_accepted") == 7
                             and line.get("kafka_listener_connections_open") == 0)
    assert stats["kafka_listener_connections_closed_tls"] == 5 and stats["kafka_listener_connections_closed_limit"] == 1
    failed = [line for line in ingress.lines() if "TLS handshake failed" in line.get("message", "")]
    assert len(failed) == 5 and all(line["peer"].startswith("127.0.0.1:") for line in failed)
    assert sum("within request_timeout" in line["message"] for line in failed) == 4
    assert ingress.stop() == 0 and ingress.unparsed_or_tracebacks() == []
    for connection in silent:
        connection.close()
    receiver.close()


def every_request():
    """A request of every API and version the listener answers, as kio writes it, with every field filled."""
    for api_key, (low, high) in protocol.VERSIONS.items():
        for version in range(low, high + 1):
            request_class, _ = protocol._classes(api_key, version)
            module = sys.modules[request_class.__module__]
            if api_key == 0:
                body = produce_request(version, "orders", 3, batch_bytes([(b"k", b"v", [("h", None)])]))
            elif api_key == 3:
                body = protocol.build(request_class, topics=(protocol.build(
                    module.MetadataRequestTopic, name="orders", topic_id=None),), allow_auto_topic_creation=True,
                    include_cluster_authorized_operations=False, include_topic_authorized_operations=False)
            elif api_key == 18:
                body = api_versions_request(version)
            elif api_key == 22:
                body = protocol.build(request_class, transactional_id=None,
                                      transaction_timeout=datetime.timedelta(seconds=5), producer_id=7,
                                      producer_epoch=1)
            elif api_key == 17:
                body = protocol.build(request_class, mechanism="SCRAM-SHA-256")
            else:
                body = protocol.build(request_class, auth_bytes=b"n,,n=user,r=abc")
            buffer = io.BytesIO()
            header_class = request_class.__header_schema__
            entity_writer(header_class)(buffer, header_class(request_api_key=api_key, request_api_version=version,
                                                             correlation_id=5, client_id="every"))
            entity_writer(request_class)(buffer, body)
            yield api_key, version, buffer.getvalue(), body


def test_the_length_check_walks_every_request_kio_writes_to_its_end():
    count = 0
    for api_key, version, frame, body in every_request():
        view = memoryview(frame)
        request_class, _ = protocol._classes(api_key, version)
        start = protocol._header_end(view, request_class.__header_schema__.__version__ >= 2)
        assert protocol._check_lengths(request_class, view, start) == len(frame), (api_key, version)
        assert protocol.read_request(frame).body == body, (api_key, version)
        count += 1
    assert count == sum(high - low + 1 for low, high in protocol.VERSIONS.values())


def test_a_tiny_request_claiming_billions_of_elements_is_refused_before_anything_is_reserved():
    """kio's reader would reserve room for 2**31 topics at once (16 GB) and abort the process when it cannot;
    under a 4 GiB address-space limit a child process shows the refusal comes first."""
    script = ("import resource, struct, sys\n"
              "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
              "from ddc.handlers.kafka_listener import protocol\n"
              "for frame in (struct.pack('>hhih', 3, 0, 1, -1) + struct.pack('>i', 0x7FFFFFFF),\n"
              "              struct.pack('>hhih', 3, 12, 1, -1) + b'\\0' + b'\\xff\\xff\\xff\\xff\\x07',\n"
              "              struct.pack('>hhih', 0, 9, 1, -1)\n"
              "              + b'\\0\\0\\xff\\xff\\0\\0\\x03\\xe8' + b'\\xff' * 4 + b'\\x07'):\n"
              "    try:\n"
              "        protocol.read_request(frame)\n"
              "    except protocol.ProtocolError as error:\n"
              "        print(error)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("a request claims") == 3, done.stdout


# ---- from the adversarial review of #23 ----


def test_headers_count_against_max_record_size_as_the_metadata_holds_them():
    """A record of empty headers (2 bytes each on the wire, 6 in the metadata) would otherwise pass a size check
    of names and values and then not fit the link's ring or frame."""
    with pytest.raises(BatchError) as refused:
        pack(batch_bytes([(None, b"v", [("", None)] * 200)]), max_record_size=1000)
    assert refused.value.code == 10
    assert len(pack(batch_bytes([(None, b"v", [("", None)] * 100)]), max_record_size=1000)) == 1


def test_a_request_inflates_to_max_request_size_in_all_and_names_a_partition_once(lone_ingress):
    import cramjam
    import crc32c

    ingress, port = lone_ingress
    client = RawClient(port)
    plain = batch_bytes([(None, bytes(1000), [])] * 600)  # 600 kB once inflated, a few kB compressed
    after = bytearray(plain[21:61]) + bytes(cramjam.zstd.compress(plain[61:]))
    after[0:2] = struct.pack(">h", 4)
    zstd = plain[:8] + struct.pack(">i", len(after) + 9) + plain[12:17] + \
        struct.pack(">I", crc32c.crc32c(bytes(after))) + bytes(after)
    module = load_payload_module(0, 9, EntityType.request)

    def request(*partitions):
        return module.ProduceRequest(transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5),
                                     topic_data=(module.TopicProduceData(name="known", partition_data=tuple(
                                         module.PartitionProduceData(index=index, records=records)
                                         for index, records in partitions)),))

    answer = client.request(0, 9, request((0, zstd), (1, zstd))).responses[0].partition_responses
    assert [(partition.index, partition.error_code) for partition in answer] == [(0, 0), (1, 10)]
    good = batch_bytes([(None, b"once", [])])
    answer = client.request(0, 9, request((0, good), (0, good))).responses[0].partition_responses
    assert [(partition.error_code, partition.base_offset) for partition in answer] == [(0, 600), (42, -1)]


def test_metadata_names_each_topic_once_however_often_it_is_asked(lone_ingress):
    _, port = lone_ingress
    module = load_payload_module(3, 12, EntityType.request)
    answer = RawClient(port).request(3, 12, module.MetadataRequest(
        topics=tuple(module.MetadataRequestTopic(topic_id=None, name="known") for _ in range(5000)),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    assert [topic.name for topic in answer.topics] == ["known"]


def metadata_of_every_topic() -> bytes:
    """A size-prefixed Metadata v12 request for every topic, to send many of without reading the answers."""
    module = load_payload_module(3, 12, EntityType.request)
    buffer = io.BytesIO()
    header_class = module.MetadataRequest.__header_schema__
    entity_writer(header_class)(buffer, header_class(request_api_key=3, request_api_version=12, correlation_id=1,
                                                     client_id="deaf"))
    entity_writer(module.MetadataRequest)(buffer, module.MetadataRequest(
        topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    return struct.pack(">i", len(buffer.getvalue())) + buffer.getvalue()


def test_a_client_that_never_reads_its_answers_is_disconnected_not_buffered(lone_ingress):
    ingress, port = lone_ingress
    client = RawClient(port)
    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = metadata_of_every_topic()
    client.socket.settimeout(0.2)
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < 15:
        try:
            sent += client.socket.send(frame * 50)
        except TimeoutError:
            pass  # the listener has stopped reading: it waits for its answers to be taken
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        raise AssertionError("the listener kept the connection of a client that reads nothing")
    stats = ingress.wait_for(lambda line: line.get("event") == "link stats"
                             and line.get("kafka_listener_connections_closed_slow", 0) >= 1)
    assert stats["kafka_listener_requests_metadata"] < sent // len(frame)


def test_the_journal_drops_a_line_cut_short_and_keeps_what_follows(tmp_path):
    from ddc.handlers.kafka_listener.state import ListenerState

    state = ListenerState(tmp_path, "link")
    changes = []
    state.topic_id("orders", changes)
    state.assign("orders", 0, 5, -1, -1, -1, changes)
    state.write(changes)
    state.close()
    with open(tmp_path / "link.kafka_listener.journal", "ab") as journal:
        journal.write(b'{"batch":["orders",0,5')  # a crash inside a write
    state = ListenerState(tmp_path, "link")
    assert state.partitions[("orders", 0)].next_offset == 5
    changes = []
    state.assign("orders", 0, 3, -1, -1, -1, changes)
    state.write(changes)
    state.close()
    state = ListenerState(tmp_path, "link")
    assert state.partitions[("orders", 0)].next_offset == 8
    state.close()


def test_producer_ids_given_out_are_kept_for_the_last_max_producers_only(tmp_path, monkeypatch):
    from ddc.handlers.kafka_listener import state as state_module

    monkeypatch.setattr(state_module, "MAX_PRODUCERS", 50)
    state = state_module.ListenerState(tmp_path, "link")
    changes = []
    for _ in range(500):
        state.new_producer(-1, -1, changes)
    state.write(changes)
    assert len(state.epochs) == 50
    state._fold()
    state.close()
    assert len(state_module.ListenerState(tmp_path, "link").epochs) == 50


def test_plain_refuses_a_user_acting_for_another():
    from ddc.handlers.kafka_listener.sasl import Authenticator

    class Sasl:
        mechanisms = ["PLAIN"]
        users_file = None

    import os
    os.environ["DDC_KAFKA_LISTENER_USERS"] = "alice:secret\nbob:other"
    try:
        make = Authenticator.factory(Sasl, "front")
    finally:
        del os.environ["DDC_KAFKA_LISTENER_USERS"]
    assert make("PLAIN").step(b"\0alice\0secret") == (b"", True)
    assert make("PLAIN").step(b"alice\0alice\0secret") == (b"", True)
    for token in (b"bob\0alice\0secret", b"\0alice\0other", b"alice\0secret", b"\0mallory\0secret"):
        with pytest.raises(PermissionError):
            make("PLAIN").step(token)


def test_a_client_that_drops_its_connection_with_answers_due_is_forgotten(start_ddc, tmp_path):
    """From the second review: a reset while the listener waited to write (before request_timeout) ended its
    writer, but its reader went on waiting for an answer slot; such connections stayed counted open for good,
    and max_connections of them locked every client out."""
    receiver, port = udp_receiver(), free_tcp_port()
    config, _ = listener_pair_configs(port, receiver.getsockname()[1], tmp_path / "state", {"wide": 200}, "unused",
                                      source_extra='max_connections = 2\nrequest_timeout = "5s"')
    ingress = start_ddc("ingress", config)
    ingress.wait_for(lambda line: "Kafka listener on" in line.get("message", ""))
    frame = metadata_of_every_topic()
    for _ in range(3):
        client = RawClient(port)
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.socket.settimeout(0.5)
        try:
            while True:
                client.socket.sendall(frame * 50)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the listener reads no more: its writer waits for this client to read
        time.sleep(0.5)
        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, well within request_timeout (5 s)
    assert RawClient(port).request(18, 3, api_versions_request(3)).error_code == 0, "max_connections (2) filled"
    ingress.wait_for(lambda line: line.get("event") == "link stats"
                     and line.get("kafka_listener_connections_accepted") == 4
                     and line.get("kafka_listener_connections_open") == 0, timeout=10)
    receiver.close()

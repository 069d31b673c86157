"""The UDP handler's sendmmsg path (ddc/handlers/udp/datagrams.pyx), against real sockets."""

import errno
import socket

import pytest
from hypothesis import given, settings, strategies as strategies

from conftest import drain
from ddc.handlers.udp.datagrams import send_batch_values, send_values
from ddc._core.records import encode_batch
from ddc.transport.sockets import socket_address_bytes


def receiving_socket():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.settimeout(5)
    return receiver


def test_each_value_leaves_as_one_datagram_in_order_even_from_views_into_one_frame():
    receiver = receiving_socket()
    frame = b"".join(bytes([n]) * n * 37 for n in range(150))
    values, position = [], 0
    for n in range(150):
        values.append(memoryview(frame)[position:position + n * 37])
        position += n * 37
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    result = send_values(sender.fileno(), values, socket_address_bytes(socket.AF_INET, receiver.getsockname()), 65507)
    assert result == (150, len(frame), 0, 0, 0)
    assert [receiver.recv(65535) for _ in range(150)] == [bytes(value) for value in values]


def test_values_too_large_for_a_datagram_are_counted_and_the_rest_still_go():
    receiver = receiving_socket()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    values = [b"a", b"b" * 2000, b"c", b"d" * 1001]
    sent, size, too_large, failed, error = send_values(
        sender.fileno(), values, socket_address_bytes(socket.AF_INET, receiver.getsockname()), 1000)
    assert (sent, size, too_large, failed, error) == (2, 2, 2, 0, 0)
    assert [receiver.recv(65535), receiver.recv(65535)] == [b"a", b"c"]


def test_a_destination_the_socket_cannot_reach_fails_each_datagram_without_raising():
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ipv6_address = socket_address_bytes(socket.AF_INET6, ("::1", 9, 0, 0))
    sent, size, too_large, failed, error = send_values(sender.fileno(), [b"x"] * 3, ipv6_address, 65507)
    assert (sent, size, too_large, failed) == (0, 0, 0, 3)
    assert error in (errno.EAFNOSUPPORT, errno.EINVAL)


@settings(max_examples=30, deadline=None)
@given(strategies.lists(strategies.tuples(strategies.binary(max_size=40), strategies.binary(max_size=1500)),
                        max_size=150))
def test_a_whole_batch_sends_the_very_datagrams_its_decoded_values_would(records):
    receiver = receiving_socket()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = socket_address_bytes(socket.AF_INET, receiver.getsockname())
    values = [value for _, value in records]
    assert send_values(sender.fileno(), values, address, 1000)[:3] == (
        sum(len(value) <= 1000 for value in values), sum(len(value) for value in values if len(value) <= 1000),
        sum(len(value) > 1000 for value in values))
    one_by_one = drain(receiver, expected=sum(len(value) <= 1000 for value in values))
    result = send_batch_values(sender.fileno(), encode_batch(records, 7), address, 1000)
    assert result == (len(records),) + send_values(sender.fileno(), values, address, 1000)
    assert drain(receiver, expected=len(one_by_one) * 2) == one_by_one * 2
    assert one_by_one == [value for value in values if len(value) <= 1000]


@pytest.mark.parametrize("damage", ["truncated", "trailing byte", "unknown format", "count too high", "empty"])
def test_a_malformed_batch_raises_and_sends_nothing(damage):
    receiver = receiving_socket()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    batch = bytearray(encode_batch([(b"10.0.0.1:9", b"first"), (b"", b"second value")]))
    broken = {"truncated": batch[:-1], "trailing byte": batch + b"x", "unknown format": b"\x09" + batch[1:],
              "count too high": batch[:4] + (3).to_bytes(4, "big") + batch[8:], "empty": b""}[damage]
    with pytest.raises(ValueError):
        send_batch_values(sender.fileno(), bytes(broken), socket_address_bytes(socket.AF_INET,
                                                                               receiver.getsockname()), 65507)
    assert drain(receiver) == []

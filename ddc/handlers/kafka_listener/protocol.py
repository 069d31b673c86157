"""The Kafka wire protocol as the listener speaks it: which APIs and versions, and how a frame becomes a request.

Requests and responses, their headers and flexible versions (compact strings and
arrays, tagged fields) are kio's, which is generated from Kafka's own message
definitions (clients/src/main/resources/common/message/*.json), so each API's
header version follows its request's version as Kafka's do. This module only says
which versions the listener answers and builds the answers' shapes, which differ
between versions by the fields they have.
"""

import functools
import io
import struct
import uuid
from datetime import timedelta
from typing import NamedTuple

from kio.index import KioIndexError, load_payload_module
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from ddc.handlers.kafka_listener.metrics import API_NAMES

PRODUCE, FETCH, METADATA, API_VERSIONS, SASL_HANDSHAKE, INIT_PRODUCER_ID, SASL_AUTHENTICATE = 0, 1, 3, 18, 17, 22, 36

#: The versions answered. Produce stops at 12: 13 names topics by id (KIP-516). InitProducerId stops at 5: 6
#: brings two-phase commit, for transactions, which the listener does not take.
VERSIONS = {
    PRODUCE: (3, 12),
    METADATA: (0, 12),
    API_VERSIONS: (0, 4),
    INIT_PRODUCER_ID: (0, 5),
    SASL_HANDSHAKE: (1, 1),
    SASL_AUTHENTICATE: (0, 2),
}
#: Advertised but not answered: librdkafka writes record batches v2 only to a broker that lists Fetch v4, and zstd
#: only where it lists Fetch v10 (its feature map ties the producer's formats to the consumer's API). A Fetch
#: request closes the connection.
ADVERTISED_ONLY = {FETCH: (4, 12)}
SIZE = struct.Struct(">i")
NO_THROTTLE = timedelta(0)


class ProtocolError(Exception):
    """A request that cannot be answered: the connection is closed and counted under `reason`."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


class Request(NamedTuple):
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: object   # kio's request; None for an ApiVersions request of a version this listener does not know


@functools.cache
def _classes(api_key: int, version: int) -> tuple[type, type]:
    request = response = None
    for entity_type in (EntityType.request, EntityType.response):
        module = load_payload_module(api_key, version, entity_type)
        for value in vars(module).values():
            if isinstance(value, type) and getattr(value, "__type__", None) is entity_type \
                    and value.__module__ == module.__name__:
                if entity_type is EntityType.request:
                    request = value
                else:
                    response = value
    return request, response


@functools.cache
def _reader(entity: type):
    return entity_reader(entity)


@functools.cache
def _writer(entity: type):
    return entity_writer(entity)


def load_every_version() -> None:
    """Imports kio's modules for every version answered, so that no client's first request waits for them."""
    for api_key, (low, high) in VERSIONS.items():
        for version in range(low, high + 1):
            request, response = _classes(api_key, version)
            _reader(request.__header_schema__)
            _reader(request)
            _writer(response)


def read_request(frame: bytes) -> Request:
    """A request from one frame (its size prefix removed). Raises ProtocolError for what cannot be answered: an
    unknown API or version (but ApiVersions, answered UNSUPPORTED_VERSION as Kafka does), or a malformed one."""
    if len(frame) < 8:
        raise ProtocolError("malformed", f"a request of {len(frame)} bytes is shorter than a request header")
    api_key, version, correlation_id = struct.unpack_from(">hhi", frame)
    supported = VERSIONS.get(api_key)
    if supported is None:
        raise ProtocolError("unsupported", f"API key {api_key} is not one the listener answers "
                            f"({', '.join(f'{name} ({key})' for key, name in API_NAMES.items())})")
    if not supported[0] <= version <= supported[1]:
        if api_key == API_VERSIONS:
            return Request(api_key, version, correlation_id, None, None)
        raise ProtocolError("unsupported", f"{API_NAMES[api_key]} v{version} is not answered (v{supported[0]} to "
                            f"v{supported[1]} are)")
    request_class, _ = _classes(api_key, version)
    view = memoryview(frame)
    try:
        header, used = _reader(request_class.__header_schema__)(view, 0)
        body, _ = _reader(request_class)(view, used)
    except (ValueError, TypeError, IndexError, OverflowError, UnicodeDecodeError, KioIndexError) as error:
        raise ProtocolError("malformed", f"a malformed {API_NAMES[api_key]} v{version} request: {error}") from None
    except Exception as error:  # kio's native reader raises its own types for truncated input
        raise ProtocolError("malformed", f"a malformed {API_NAMES[api_key]} v{version} request: "
                            f"{type(error).__name__}: {error}") from None
    return Request(api_key, version, correlation_id, getattr(header, "client_id", None), body)


def response_class(request: Request, name: str) -> type:
    """A class of the response's module for the request's version: the response itself or one it nests."""
    _, response = _classes(request.api_key, request.version)
    return getattr(__import__(response.__module__, fromlist=[name]), name)


def build(entity: type, **fields):
    """An entity of a version with the fields that version has; kio's defaults fill the rest."""
    known = entity.__dataclass_fields__
    return entity(**{name: value for name, value in fields.items() if name in known})


def encode_response(request: Request, body) -> bytes:
    """The size-prefixed frame of a response, its header the version the response's schema names."""
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    header_class = type(body).__header_schema__
    _writer(header_class)(buffer, header_class(correlation_id=request.correlation_id))
    _writer(type(body))(buffer, body)
    frame = buffer.getbuffer()
    SIZE.pack_into(frame, 0, len(frame) - 4)
    return bytes(frame)


_ERRORS = {int(member): member for member in ErrorCode}


def error_code(code: int) -> ErrorCode:
    return _ERRORS[code]


def api_versions_response(request: Request):
    """Every API and version answered; an unknown ApiVersions version gets UNSUPPORTED_VERSION in v0's shape,
    from which the client picks a version both know (KIP-511)."""
    _, response = _classes(API_VERSIONS, request.version if request.body is not None else 0)
    module = __import__(response.__module__, fromlist=["ApiVersion"])
    keys = tuple(build(module.ApiVersion, api_key=key, min_version=low, max_version=high)
                 for key, (low, high) in sorted({**VERSIONS, **ADVERTISED_ONLY}.items()))
    return build(response, error_code=_ERRORS[0 if request.body is not None else 35], api_keys=keys,
                 throttle_time=NO_THROTTLE)


def topic_uuid(topic_id: bytes | None):
    return uuid.UUID(bytes=topic_id) if topic_id else uuid.UUID(int=0)


"""The Kafka wire protocol as the listener speaks it: which APIs and versions, and how a frame becomes a request.

Requests and responses, their headers and flexible versions (compact strings and
arrays, tagged fields) are kio's, which is generated from Kafka's own message
definitions (clients/src/main/resources/common/message/*.json), so each API's
header version follows its request's version as Kafka's do. This module only says
which versions the listener answers and builds the answers' shapes, which differ
between versions by the fields they have.
"""

import dataclasses
import functools
import io
import struct
import typing
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
            _every_layout(request)
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
    _check_lengths(request_class, view, _header_end(view, request_class.__header_schema__.__version__ >= 2))
    try:
        header, used = _reader(request_class.__header_schema__)(view, 0)
        body, _ = _reader(request_class)(view, used)
    except (ValueError, TypeError, IndexError, OverflowError, UnicodeDecodeError, KioIndexError) as error:
        raise ProtocolError("malformed", f"a malformed {API_NAMES[api_key]} v{version} request: {error}") from None
    except Exception as error:  # kio's native reader raises its own types for truncated input
        raise ProtocolError("malformed", f"a malformed {API_NAMES[api_key]} v{version} request: "
                            f"{type(error).__name__}: {error}") from None
    missing = _null_where_required(body)
    if missing:
        raise ProtocolError("malformed", f"a malformed {API_NAMES[api_key]} v{version} request: {missing} is null")
    return Request(api_key, version, correlation_id, getattr(header, "client_id", None), body)


# ---- lengths checked before kio reads them ----
#
# kio's native reader reserves room for an array as soon as it reads the array's length, before it reads what
# the array holds: a request of 16 bytes claiming 2**31 topics makes it ask for 16 GB, and an allocation that
# fails aborts the process (Rust). So every length in a request is checked against the bytes that follow it
# first, walking the request's schema as kio does, and a request that claims more is refused.

FIXED_SIZES = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8,
               "float64": 8, "uuid": 16, "error_code": 2, "timedelta_i32": 4, "timedelta_i64": 8,
               "datetime_i64": 8}
LENGTH_PREFIXED = {"string": 2, "bytes": 4, "records": 4}  # the width of the length outside flexible versions


def _too_long(what: str, claimed: int, left: int) -> ProtocolError:
    return ProtocolError("malformed", f"a request claims {claimed} {what} with {left} bytes left")


def _unsigned_varint(view, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(view) or shift > 28:
            raise ProtocolError("malformed", "a request's varint is cut short or too long")
        byte = view[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _skip_tagged(view, position: int) -> int:
    count, position = _unsigned_varint(view, position)
    if count > len(view) - position:
        raise _too_long("tagged fields", count, len(view) - position)
    for _ in range(count):
        _, position = _unsigned_varint(view, position)
        size, position = _unsigned_varint(view, position)
        if size > len(view) - position:
            raise _too_long("bytes of a tagged field", size, len(view) - position)
        position += size
    return position


def _header_end(view, flexible: bool) -> int:
    """Request headers v1 and v2: key, version, correlation id, a client id of int16 length (even in v2), then
    v2's tagged fields."""
    if len(view) < 10:
        raise ProtocolError("malformed", f"a request of {len(view)} bytes is shorter than a request header")
    length = int.from_bytes(view[8:10], "big", signed=True)
    position = 10 + max(length, 0)
    if position > len(view):
        raise _too_long("bytes of client id", length, len(view) - 10)
    return _skip_tagged(view, position) if flexible else position


@functools.cache
def _layout(entity: type) -> tuple:
    """Each field of an entity, in wire order: (name, nullable, tagged, kind, element). kind is a kafka_type,
    "array" or "entity"; element is an array's element (an entity class, or a kafka_type) or a nested entity."""
    hints = typing.get_type_hints(entity)
    layout = []
    for field in dataclasses.fields(entity):
        hint = hints[field.name]
        nullable = type(None) in typing.get_args(hint)
        inner = [argument for argument in typing.get_args(hint) if argument is not type(None)]
        if nullable and len(inner) == 1:
            hint = inner[0]
        if typing.get_origin(hint) is tuple:
            element = typing.get_args(hint)[0]
            kind, element = "array", element if dataclasses.is_dataclass(element) else field.metadata["kafka_type"]
        elif dataclasses.is_dataclass(hint):
            kind, element = "entity", hint
        else:
            kind, element = field.metadata["kafka_type"], None
            if kind not in FIXED_SIZES and kind not in LENGTH_PREFIXED:
                raise RuntimeError(f"{entity.__name__}.{field.name}: kafka_type {kind!r} is not known here")
        layout.append((field.name, nullable, field.metadata.get("tag") is not None, kind, element))
    return tuple(layout)


def _every_layout(entity: type) -> None:
    for _, _, _, _, element in _layout(entity):
        if isinstance(element, type):
            _every_layout(element)


def _check_lengths(entity: type, view, position: int) -> int:
    """Walks an entity from position, refusing any length or count that claims more than the bytes left;
    returns where the entity ends."""
    flexible = entity.__flexible__
    for _, _, tagged, kind, element in _layout(entity):
        if tagged:
            continue  # in the tagged fields' section at the end
        if kind == "entity":
            position = _check_lengths(element, view, position)
        elif kind == "array":
            if flexible:
                count, position = _unsigned_varint(view, position)
                count -= 1
            else:
                if position + 4 > len(view):
                    raise _too_long("bytes of an array length", 4, len(view) - position)
                count = int.from_bytes(view[position:position + 4], "big", signed=True)
                position += 4
            if count > len(view) - position:
                raise _too_long("array elements", count, len(view) - position)
            for _ in range(max(count, 0)):
                position = (_check_lengths(element, view, position) if not isinstance(element, str)
                            else _skip_value(element, view, position, flexible))
        else:
            position = _skip_value(kind, view, position, flexible)
    return _skip_tagged(view, position) if flexible else position


def _skip_value(kind: str, view, position: int, flexible: bool) -> int:
    size = FIXED_SIZES.get(kind)
    if size is None:
        if flexible:
            size, position = _unsigned_varint(view, position)
            size = max(size - 1, 0)
        else:
            width = LENGTH_PREFIXED[kind]
            if position + width > len(view):
                raise _too_long("bytes of a length", width, len(view) - position)
            size = max(int.from_bytes(view[position:position + width], "big", signed=True), 0)
            position += width
    if size > len(view) - position:
        raise _too_long(f"bytes of {kind}", size, len(view) - position)
    return position + size


def _null_where_required(entity, path: str = "") -> str | None:
    """The first field of the request, nested ones included, that is null though the schema says it cannot be:
    kio reads a null where the schema allows none (an array of length -1) without a word."""
    for name, nullable, _, _, element in _layout(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                return f"{path}{name}"
        elif isinstance(element, type):
            for item in value if isinstance(value, tuple) else (value,):
                missing = _null_where_required(item, f"{path}{name}.")
                if missing:
                    return missing
    return None


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


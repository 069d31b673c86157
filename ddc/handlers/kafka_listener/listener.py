"""The Kafka listener: producers write to the ingress over the Kafka protocol, as to a one-broker cluster.

The listener is the leader of every partition it serves and gives each record its
offset (state.py keeps them across restarts). Its records are the ones a Kafka
source makes of what it consumes, with the listener's own topic ids, so the
egress and its sinks take them unchanged: de-duplication and missing-record
reports by source offset included.

A producer is answered once its records are in frames handed to the kernel (the
link acknowledges records in the order it took them): the point at which a
Kafka source commits. Until then the answer waits, so a full link slows
producers down instead of dropping what they were told is written; and the
requests that connections may read ahead are bounded in bytes (max_pending_bytes),
so memory stays bounded whatever the producers do.

Connections are served by an asyncio loop in the source's thread, one request at
a time per connection and answered in order, as Kafka does; requests are parsed
per request in Python (kio) and records per batch in Cython (batches.pyx). A
second thread moves packed records into the link's buffer, whose put blocks when
it is full, so that the loop never blocks.
"""

import asyncio
import heapq
import itertools
import logging
import queue
import random
import re
import socket
import ssl
import threading
import time

import cramjam

from ddc.handlers.base import Source
from ddc.handlers.kafka import codec
from ddc.handlers.kafka.codec import POSITION, UNKNOWN_OFFSET
from ddc.handlers.kafka.description import KafkaRecords
from ddc.handlers.kafka_listener import protocol
from ddc.handlers.kafka_listener.batches import (BATCH_HEADER_BYTES, BATCH_INVALID, BATCH_TOO_LARGE,
                                                 COMPRESSION_MASK, CONTROL, TRANSACTIONAL, BatchError, PackedRecords,
                                                 pack_records, read_batches)
from ddc.handlers.kafka_listener.protocol import (API_VERSIONS, INIT_PRODUCER_ID, METADATA, NO_THROTTLE,
                                                  SASL_AUTHENTICATE, SASL_HANDSHAKE, ProtocolError, build,
                                                  encode_response, error_code, response_class)
from ddc.handlers.kafka_listener.metrics import CLOSE_REASONS, PRODUCE_ERRORS
from ddc.handlers.kafka_listener.sasl import Authenticator
from ddc.handlers.kafka_listener.state import Batch, ListenerState

log = logging.getLogger("ddc.handlers.kafka_listener")

NODE_ID = 1
POSITION_INTERVAL_SECONDS = 2.0
STOP_ANSWER_SECONDS = 5.0
PUT_WAIT_SECONDS = 0.1
STOP_POLL_SECONDS = 0.1
LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
RECORD_OVERHEAD = 64   # bytes of metadata per record beside its topic, key and headers, for the pending bound
MAX_UNANSWERED = 16    # requests per connection read ahead of their answers (clients pipeline 5)
BEFORE_LOGIN_BYTES = 512 * 1024  # the largest request before SASL authentication (Kafka's sasl.server.max.receive.size)

NONE, CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST = 0, 2, 3, 42
INVALID_TOPIC, INVALID_REQUIRED_ACKS, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 17, 21, 33, 34
POLICY_VIOLATION, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH = 44, 45, 47
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, SASL_AUTHENTICATION_FAILED, KAFKA_STORAGE_ERROR = 53, 58, 56
UNSUPPORTED_COMPRESSION_TYPE = 76
COMPRESSIONS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
XERIAL_MAGIC = b"\x82SNAPPY\x00"


class Connection:
    __slots__ = ("peer", "answers", "unanswered", "due", "last_answer", "authenticated", "authenticator",
                 "refused_login", "reader_task")

    def __init__(self, peer: str, authenticated: bool):
        self.peer = peer
        self.answers: asyncio.Queue = asyncio.Queue()
        # Requests read but not yet answered: a client that does not read its answers stops being read.
        self.unanswered = asyncio.Semaphore(MAX_UNANSWERED)
        self.due = 0  # answers queued and not yet written
        self.last_answer = 0.0  # when the last answer was written (time.monotonic)
        self.authenticated = authenticated
        self.authenticator = None
        self.refused_login = False
        self.reader_task = None


class Planned:
    """One partition of a produce request: its answer, and what it sends."""

    __slots__ = ("topic", "partition", "code", "message", "base_offset", "records", "size", "batch", "resend",
                 "producer_id", "epoch", "stream_start")

    def __init__(self, topic: str, partition: int, code: int = NONE, message: str | None = None):
        self.topic, self.partition, self.code, self.message = topic, partition, code, message
        self.base_offset = -1
        self.records = None
        self.size = 0
        self.batch = None          # the batch whose answer this is (a new one, or the original of a retry)
        self.resend = False        # a retry of a batch from before a restart: sent again under its offsets
        self.producer_id = -1
        self.epoch = -1
        self.stream_start = -1


class KafkaListener(KafkaRecords, Source):
    default_when_full = "block"
    can_wait = True

    def __init__(self, link_name: str, config):
        super().__init__(link_name, config)
        self.state: ListenerState | None = None
        self._socket: socket.socket | None = None
        self._ssl: ssl.SSLContext | None = None
        self._authenticator_for = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._output = None
        self._assignment = random.randint(1, 255)
        self._previous: dict = {}          # (topic, partition) -> last offset put in the buffer (or assigned)
        self._enqueued = 0                 # records handed to the pump, in order (positions too)
        self._acknowledged = 0             # of those, how many the link has sent
        self._link_acknowledged = 0
        self._acknowledged_lock = threading.Lock()
        self._waiting: list = []           # heap of (records enqueued when done, number, future)
        self._numbers = itertools.count()
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._in_use = 0                   # bytes of requests being read and of records not yet in the buffer
        self._room: asyncio.Event | None = None
        self._abandon = threading.Event()
        self._connections: set = set()
        self._positions_announced = 0.0
        self._warned_transactions = False
        self.connections_accepted = 0
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)
        self.requests = dict.fromkeys(protocol.API_NAMES.values(), 0)
        self.produce_errors = dict.fromkeys(PRODUCE_ERRORS.values(), 0)
        self.records_in = 0
        self.bytes_in = 0
        self.retries_answered = 0
        self.records_resent = 0
        self.produce_seconds = 0.0
        self.produce_answers = 0
        self.backpressure_seconds = 0.0

    # ---- lifecycle ----

    def open(self) -> None:
        config = self.config
        protocol.load_every_version()
        self.state = ListenerState(config.state_directory, self.link_name)
        changes = []
        for topic in config.topics:
            self.state.topic_id(topic, changes)
        self.state.write(changes)
        for coordinate, partition in self.state.partitions.items():
            if partition.next_offset > 0:
                # The last offset given out: those after the last one sent are reported missing unless retried.
                self._previous[coordinate] = partition.next_offset - 1
        if config.tls is not None:
            self._ssl = server_tls(config.tls)
        if config.sasl is not None:
            self._authenticator_for = Authenticator.factory(config.sasl, self.link_name)
        family = socket.AF_INET6 if ":" in config.listen.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((config.listen.host, config.listen.port))
            self._socket.listen(1024)
        except OSError as error:
            self._socket.close()
            self.state.close()
            raise OSError(f"link {self.link_name}: cannot listen for Kafka producers on {config.listen}: "
                          f"{error.strerror}") from None
        self._socket.setblocking(False)
        advertised = config.advertised_listener or config.listen
        log.info(f"link {self.link_name}: Kafka listener on {config.listen} (advertised as {advertised}"
                 f"{', TLS' if self._ssl else ''}"
                 f"{', SASL ' + '/'.join(config.sasl.mechanisms) if config.sasl else ''})",
                 extra={"fields": {"link": self.link_name, "listen": str(config.listen),
                                   "advertised_listener": str(advertised)}})

    def run(self, output, stopping) -> None:
        self._output = output
        pump = threading.Thread(target=self._pump, name=f"{self.link_name}-listener-pump", daemon=True)
        pump.start()
        try:
            asyncio.run(self._serve(stopping))
        finally:
            self._abandon.set()
            self._pending.put(None)
            pump.join()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.state is not None:
            self.state.close()

    # ---- the loop ----

    async def _serve(self, stopping) -> None:
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._room.set()
        server = await asyncio.start_server(self._serve_connection, sock=self._socket, limit=1 << 16)
        self._socket = None  # the server closes it
        try:
            while not stopping.is_set():
                await asyncio.sleep(STOP_POLL_SECONDS)
                if time.monotonic() - self._positions_announced >= POSITION_INTERVAL_SECONDS:
                    self._announce_positions()
        finally:
            server.close()
            await self._stop_connections()

    async def _stop_connections(self) -> None:
        """No new request is read; what was taken in is sent and answered, for STOP_ANSWER_SECONDS at most."""
        for connection in list(self._connections):
            if connection.reader_task is not None:
                connection.reader_task.cancel()
        self._announce_positions()
        deadline = time.monotonic() + STOP_ANSWER_SECONDS
        while self._enqueued > self._acknowledged and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        unanswered = sum(1 for _, _, future in self._waiting if not future.done())
        if unanswered:
            log.warning(f"link {self.link_name}: stopping with {unanswered} produce requests not yet sent over the "
                        "link; their producers are not answered and send them again (idempotent producers' "
                        "retries are recognised after the restart)", extra={"fields": {"link": self.link_name}})
        for _, _, future in self._waiting:
            future.cancel()
        for connection in list(self._connections):
            connection.answers.put_nowait(None)
        deadline = time.monotonic() + 1.0
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _serve_connection(self, reader, writer) -> None:
        peer = format_peer(writer.get_extra_info("peername"))
        if len(self._connections) >= self.config.max_connections:
            self.closed["limit"] += 1
            log.warning(f"link {self.link_name}: refused a connection from {peer}: max_connections "
                        f"({self.config.max_connections}) are open", extra={"fields": {"link": self.link_name}})
            writer.close()
            return
        connection = Connection(peer, authenticated=self._authenticator_for is None)
        self._connections.add(connection)
        self.connections_accepted += 1
        connection.reader_task = asyncio.current_task()
        if self._ssl is not None and not await self._start_tls(connection, writer):
            connection.reader_task = None
            self._connections.discard(connection)
            return
        answering = asyncio.create_task(self._answer(connection, writer))
        try:
            await self._read_requests(connection, reader)
        except ProtocolError as error:
            self.closed[error.reason] += 1
            log.info(f"link {self.link_name}: closed the connection from {peer}: {error}",
                     extra={"fields": {"link": self.link_name, "peer": peer, "reason": error.reason}})
            answering.cancel()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            answering.cancel()
        except asyncio.CancelledError:
            pass  # stopping: the answers already due are still written
        finally:
            connection.reader_task = None
            connection.answers.put_nowait(None)
            try:
                await answering
            except (asyncio.CancelledError, ConnectionError, OSError, TimeoutError):
                pass
            writer.close()
            self._connections.discard(connection)

    async def _start_tls(self, connection: Connection, writer) -> bool:
        """The TLS handshake, inside the connection's place among max_connections (asyncio's own handshake comes
        before it, where clients that never finish theirs would be neither bounded nor counted). A refused or
        unfinished handshake is counted; a client gone before finishing, as a TCP health check, is not."""
        # Marked before the handshake, not after as start_tls does: a request and the client's close_notify read
        # in its last packet would otherwise make asyncio print a warning past the JSON log.
        if hasattr(writer._protocol, "_over_ssl"):
            writer._protocol._over_ssl = True
        try:
            await writer.start_tls(self._ssl, ssl_handshake_timeout=self.config.request_timeout)
            return True
        except asyncio.CancelledError:
            writer.transport.abort()
            return False
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as error:
            writer.transport.abort()
            unfinished = "taking longer" in str(error)
            if not unfinished and isinstance(error, ConnectionError):
                log.debug(f"link {self.link_name}: the connection from {connection.peer} ended in its TLS "
                          f"handshake ({error})", extra={"fields": {"link": self.link_name, "peer": connection.peer}})
                return False
            self.closed["tls"] += 1
            reason = "no handshake within request_timeout" if unfinished \
                else getattr(error, "reason", None) or error.__class__.__name__
            log.info(f"link {self.link_name}: closed the connection from {connection.peer}: TLS handshake failed "
                     f"({reason})", extra={"fields": {"link": self.link_name, "peer": connection.peer,
                                                     "reason": "tls"}})
            return False

    async def _read_requests(self, connection: Connection, reader) -> None:
        config = self.config
        while not connection.refused_login:
            await connection.unanswered.acquire()
            prefix = await self._next_request(connection, reader)
            if prefix is None:
                return
            size = int.from_bytes(prefix, "big", signed=True)
            if size > (config.max_request_size if connection.authenticated else BEFORE_LOGIN_BYTES):
                raise ProtocolError("oversized", f"a request of {size} bytes is over max_request_size "
                                                 f"({config.max_request_size})" if connection.authenticated else
                                                 f"a request of {size} bytes before SASL authentication, over "
                                                 f"{BEFORE_LOGIN_BYTES}")
            if size < 8:
                raise ProtocolError("malformed", f"a request size of {size} bytes")
            # A client not logged in has its own small limit (max_connections of them at most), and none of the
            # producers' room: it must not be able to make them wait.
            reserved = size if connection.authenticated else 0
            await self._reserve(reserved)
            try:
                try:
                    frame = await asyncio.wait_for(reader.readexactly(size), config.request_timeout)
                except TimeoutError:
                    raise ProtocolError("slow", f"a request of {size} bytes did not arrive within request_timeout "
                                                f"({config.request_timeout:g} s)") from None
                except asyncio.IncompleteReadError:
                    raise ProtocolError("malformed", f"the connection closed inside a request of {size} "
                                                     "bytes") from None
                request = protocol.read_request(frame)
                del frame
                answer = self._handle(connection, request)
            finally:
                self._release(reserved)
            if answer is None:
                connection.unanswered.release()
            else:
                connection.due += 1
                connection.answers.put_nowait(answer)

    async def _next_request(self, connection: Connection, reader):
        """A request's size prefix; None at a clean end. A connection is idle once idle_timeout has passed with no
        request and no answer due or written."""
        wait = self.config.idle_timeout
        while True:
            try:
                return await asyncio.wait_for(reader.readexactly(4), wait)
            except asyncio.IncompleteReadError as error:
                if error.partial:
                    raise ProtocolError("malformed", "the connection closed inside a request's size") from None
                return None
            except TimeoutError:
                wait = self.config.idle_timeout - (time.monotonic() - connection.last_answer)
                if connection.due or wait > 0:
                    wait = max(wait, 0.1) if not connection.due else self.config.idle_timeout
                    continue
                raise ProtocolError("idle", f"no request for idle_timeout ({self.config.idle_timeout:g} s)") from None

    async def _answer(self, connection: Connection, writer) -> None:
        """Writes the answers in the order of the requests; each is bytes or a task that makes them. A client that
        does not take an answer within request_timeout is disconnected; whatever ends the writing but the end of
        the connection's requests stops its reading too (the reader may be waiting for an answer slot)."""
        try:
            while True:
                answer = await connection.answers.get()
                if answer is None:
                    return
                frame = answer if isinstance(answer, bytes) else await answer
                connection.unanswered.release()
                connection.due -= 1
                if frame is None:
                    continue
                writer.write(frame)
                try:
                    await asyncio.wait_for(writer.drain(), self.config.request_timeout)
                except TimeoutError:
                    self.closed["slow"] += 1
                    log.info(f"link {self.link_name}: closed the connection from {connection.peer}: it took no "
                             f"answer within request_timeout ({self.config.request_timeout:g} s)",
                             extra={"fields": {"link": self.link_name, "peer": connection.peer, "reason": "slow"}})
                    raise
                connection.last_answer = time.monotonic()
        except BaseException:
            writer.transport.abort()
            if connection.reader_task is not None:
                connection.reader_task.cancel()
            raise

    async def _reserve(self, size: int) -> None:
        """Waits while what connections have read ahead and not yet put in the link's buffer is over
        max_pending_bytes; one request always proceeds."""
        if not size:
            return
        started = None
        while self._in_use and self._in_use + size > self.config.max_pending_bytes:
            if started is None:
                started = time.monotonic()
            self._room.clear()
            await self._room.wait()
        if started is not None:
            self.backpressure_seconds += time.monotonic() - started
        self._in_use += size

    def _release(self, size: int) -> None:
        self._in_use -= size
        if self._in_use < self.config.max_pending_bytes:
            self._room.set()

    # ---- requests ----

    def _handle(self, connection: Connection, request):
        """The answer to a request: bytes, a task making them, or None (acks=0)."""
        self.requests[protocol.API_NAMES[request.api_key]] += 1
        if request.api_key == API_VERSIONS:
            return encode_response(request, protocol.api_versions_response(request))
        if request.api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            return encode_response(request, self._sasl(connection, request))
        if not connection.authenticated:
            raise ProtocolError("unauthenticated", f"{protocol.API_NAMES[request.api_key]} before SASL "
                                                   "authentication")
        if request.api_key == METADATA:
            return encode_response(request, self._metadata(request))
        if request.api_key == INIT_PRODUCER_ID:
            return encode_response(request, self._init_producer_id(request))
        return self._produce(request)

    def _sasl(self, connection: Connection, request):
        if request.api_key == SASL_HANDSHAKE:
            mechanisms = tuple(self.config.sasl.mechanisms) if self.config.sasl else ()
            if connection.authenticated or request.body.mechanism not in mechanisms:
                code = ILLEGAL_SASL_STATE if connection.authenticated else UNSUPPORTED_SASL_MECHANISM
            else:
                code = NONE
                connection.authenticator = self._authenticator_for(request.body.mechanism)
            return build(response_class(request, "SaslHandshakeResponse"), error_code=error_code(code),
                         mechanisms=mechanisms)
        response = response_class(request, "SaslAuthenticateResponse")
        if connection.authenticator is None:
            return build(response, error_code=error_code(ILLEGAL_SASL_STATE), error_message="no SASL handshake",
                         auth_bytes=b"")
        try:
            challenge, done = connection.authenticator.step(request.body.auth_bytes)
        except PermissionError as error:
            self.closed["unauthenticated"] += 1
            log.warning(f"link {self.link_name}: SASL authentication from {connection.peer} failed: {error}",
                        extra={"fields": {"link": self.link_name, "peer": connection.peer}})
            connection.authenticator = None
            connection.refused_login = True  # answered, then closed, as Kafka does: no guessing on one connection
            return build(response, error_code=error_code(SASL_AUTHENTICATION_FAILED),
                         error_message=f"authentication failed: {error}", auth_bytes=b"")
        if done:
            connection.authenticated = True
            connection.authenticator = None
        return build(response, error_code=error_code(NONE), error_message=None, auth_bytes=challenge)

    def _partition_count(self, topic: str, create: bool) -> int | str:
        """The topic's partition count, creating it when it may be; or why it cannot be produced to."""
        configured = self.config.topics.get(topic)
        if configured is not None:
            return configured
        automatic = self.config.auto_create_partitions
        if automatic is None:
            return "unknown"
        if topic in self.state.topic_ids:
            return automatic
        if not create:
            return "unknown"
        if not LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
            return "invalid"
        if len(self.state.topic_ids) >= self.config.max_topics:
            log.warning(f"link {self.link_name}: topic {topic!r} not created: max_topics ({self.config.max_topics}) "
                        "exist", extra={"fields": {"link": self.link_name, "topic": topic}})
            return "limit"
        changes = []
        self.state.topic_id(topic, changes)
        try:
            self.state.write(changes)
        except OSError as error:
            del self.state.topic_ids[topic]
            log.error(f"link {self.link_name}: topic {topic!r} not created: {error}",
                      extra={"fields": {"link": self.link_name, "topic": topic}})
            return "storage"
        log.info(f"link {self.link_name}: created topic {topic!r} with {automatic} partitions",
                 extra={"fields": {"link": self.link_name, "topic": topic}})
        return automatic

    def _metadata(self, request):
        body = request.body
        module_response = response_class(request, "MetadataResponse")
        topic_class = response_class(request, "MetadataResponseTopic")
        partition_class = response_class(request, "MetadataResponsePartition")
        broker_class = response_class(request, "MetadataResponseBroker")
        if body.topics is None or (request.version == 0 and not body.topics):
            names = sorted(set(self.config.topics) | (set(self.state.topic_ids)
                                                      if self.config.auto_create_partitions else set()))
        else:
            names = list(dict.fromkeys(topic.name for topic in body.topics if topic.name is not None))
        create = getattr(body, "allow_auto_topic_creation", True)
        topics = []
        for name in names:
            count = self._partition_count(name, create)
            if isinstance(count, str):
                code = {"invalid": INVALID_TOPIC, "limit": POLICY_VIOLATION,
                        "storage": KAFKA_STORAGE_ERROR}.get(count, UNKNOWN_TOPIC_OR_PARTITION)
                topics.append(build(topic_class, error_code=error_code(code), name=name,
                                    topic_id=protocol.topic_uuid(None), partitions=()))
                continue
            partitions = tuple(build(partition_class, error_code=error_code(NONE), partition_index=index,
                                     leader_id=NODE_ID, leader_epoch=0, replica_nodes=(NODE_ID,),
                                     isr_nodes=(NODE_ID,), offline_replicas=())
                               for index in range(count))
            topics.append(build(topic_class, error_code=error_code(NONE), name=name,
                                topic_id=protocol.topic_uuid(self.state.topic_ids.get(name)), is_internal=False,
                                partitions=partitions))
        advertised = self.config.advertised_listener or self.config.listen
        return build(module_response, throttle_time=NO_THROTTLE,
                     brokers=(build(broker_class, node_id=NODE_ID, host=advertised.host, port=advertised.port),),
                     cluster_id=f"ddc-{self.link_name}", controller_id=NODE_ID, topics=tuple(topics))

    def _init_producer_id(self, request):
        body = request.body
        response = response_class(request, "InitProducerIdResponse")
        if body.transactional_id is not None:
            self._refuse_transactions(body.transactional_id)
            return build(response, throttle_time=NO_THROTTLE,
                         error_code=error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED), producer_id=-1,
                         producer_epoch=-1)
        changes = []
        producer_id, epoch = self.state.new_producer(getattr(body, "producer_id", -1),
                                                     getattr(body, "producer_epoch", -1), changes)
        try:
            self.state.write(changes)
        except OSError as error:
            log.error(f"link {self.link_name}: cannot record a new producer id: {error}",
                      extra={"fields": {"link": self.link_name}})
            return build(response, throttle_time=NO_THROTTLE, error_code=error_code(KAFKA_STORAGE_ERROR),
                         producer_id=-1, producer_epoch=-1)
        return build(response, throttle_time=NO_THROTTLE, error_code=error_code(NONE), producer_id=producer_id,
                     producer_epoch=epoch)

    def _refuse_transactions(self, transactional_id) -> None:
        if not self._warned_transactions:
            self._warned_transactions = True
            log.warning(f"link {self.link_name}: a producer asked for transactions (transactional.id "
                        f"{transactional_id!r}); the Kafka listener does not take them: leave transactional.id "
                        "unset (idempotence is supported)", extra={"fields": {"link": self.link_name}})

    # ---- produce ----

    def _produce(self, request):
        started = time.monotonic()
        body = request.body
        changes, planned = [], []
        refused = None
        if body.transactional_id is not None:
            self._refuse_transactions(body.transactional_id)
            refused = TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        elif body.acks not in (0, 1, -1):
            refused = INVALID_REQUIRED_ACKS
        seen = set()
        inflatable = [self.config.max_request_size]  # what the request's batches may inflate to, together
        for topic_data in body.topic_data:
            for data in topic_data.partition_data:
                coordinate = (topic_data.name, data.index)
                if refused is not None:
                    planned.append(Planned(topic_data.name, data.index, refused))
                elif coordinate in seen:
                    planned.append(Planned(topic_data.name, data.index, INVALID_REQUEST,
                                           "the partition appears twice in the request"))
                else:
                    seen.add(coordinate)
                    planned.append(self._plan(topic_data.name, data.index, data.records, changes, inflatable))
        try:
            self.state.write(changes)
        except OSError as error:
            log.error(f"link {self.link_name}: cannot record offsets ({error}); produce requests are refused "
                      "with KAFKA_STORAGE_ERROR", extra={"fields": {"link": self.link_name}})
            for plan in planned:
                if plan.records is not None and not plan.resend:
                    plan.code, plan.message, plan.records, plan.base_offset = KAFKA_STORAGE_ERROR, str(error), None, -1
        done_at = 0
        for plan in planned:
            if plan.code != NONE:
                self.produce_errors[PRODUCE_ERRORS.get(plan.code, "invalid_record")] += 1
                continue
            if plan.records is not None:
                count = len(plan.records)
                self.records_in += count
                self.bytes_in += plan.size
                if plan.resend:
                    self.records_resent += count
                else:
                    self._previous[(plan.topic, plan.partition)] = plan.base_offset + count - 1
                self._enqueue(plan.records, plan.size)
                if plan.batch is not None:
                    plan.batch.sent_at = self._enqueued
                    if not plan.resend:
                        self.state.remember(plan.producer_id, plan.topic, plan.partition, plan.epoch, plan.batch)
                done_at = max(done_at, self._enqueued)
            elif plan.batch is not None:
                done_at = max(done_at, plan.batch.sent_at or 0)
        if body.acks == 0:
            return None
        future = self._loop.create_future()
        if done_at <= self._acknowledged:
            future.set_result(None)
        else:
            heapq.heappush(self._waiting, (done_at, next(self._numbers), future))
        return asyncio.ensure_future(self._answer_produce(request, planned, future, started))

    async def _answer_produce(self, request, planned: list, future, started: float):
        try:
            await future
        except asyncio.CancelledError:
            return None
        self.produce_seconds += time.monotonic() - started
        self.produce_answers += 1
        partition_class = response_class(request, "PartitionProduceResponse")
        topic_class = response_class(request, "TopicProduceResponse")
        topics: dict = {}
        for plan in planned:
            topics.setdefault(plan.topic, []).append(build(
                partition_class, index=plan.partition, error_code=error_code(plan.code),
                base_offset=plan.base_offset if plan.code == NONE else -1, log_append_time=None,
                log_start_offset=plan.stream_start, record_errors=(), error_message=plan.message))
        return encode_response(request, build(
            response_class(request, "ProduceResponse"), throttle_time=NO_THROTTLE,
            responses=tuple(build(topic_class, name=name, partition_responses=tuple(partitions))
                            for name, partitions in topics.items())))

    def _plan(self, topic: str, partition: int, records, changes: list, inflatable: list) -> Planned:
        plan = Planned(topic, partition)
        count = self._partition_count(topic, create=False)
        if isinstance(count, str) or not 0 <= partition < count:
            plan.code = UNKNOWN_TOPIC_OR_PARTITION
            return plan
        state = self.state.partition(topic, partition)
        plan.stream_start = state.stream_start
        try:
            batches = read_batches(records or b"")
            if len(batches) != 1:
                raise BatchError(BATCH_INVALID, f"a partition's records hold {len(batches)} batches; Kafka takes "
                                                "exactly one per partition and request")
            (start, end, attributes, last_offset_delta, base_timestamp, max_timestamp, producer_id, epoch,
             first_sequence, record_count) = batches[0]
            if attributes & (TRANSACTIONAL | CONTROL):
                raise BatchError(BATCH_INVALID, "a transactional or control batch; the listener takes no "
                                                "transactions")
            if last_offset_delta != record_count - 1:
                raise BatchError(BATCH_INVALID, f"last offset delta {last_offset_delta} for {record_count} records")
            sequences = None
            if producer_id >= 0:
                sequences = self.state.known_sequences(producer_id, topic, partition)
                if sequences is not None and epoch < sequences.epoch:
                    plan.code, plan.message = INVALID_PRODUCER_EPOCH, (f"producer epoch {epoch} is older than "
                                                                       f"{sequences.epoch}")
                    return plan
                if sequences is not None and epoch == sequences.epoch:
                    for batch in sequences.batches:
                        if batch.first_sequence == first_sequence and batch.count == record_count:
                            return self._retry(plan, batch, records, start, end, attributes, record_count,
                                               base_timestamp, max_timestamp, state, producer_id, epoch, inflatable)
                    last = sequences.batches[-1].last_sequence if sequences.batches else None
                    if last is not None and first_sequence != (last + 1) % (1 << 31):
                        plan.code, plan.message = OUT_OF_ORDER_SEQUENCE_NUMBER, (
                            f"sequence {first_sequence} follows {last}")
                        return plan
                elif sequences is not None and first_sequence != 0:
                    plan.code, plan.message = OUT_OF_ORDER_SEQUENCE_NUMBER, (
                        f"a new epoch {epoch} starts at sequence {first_sequence}, not 0")
                    return plan
            payload = self._payload(records, start, end, attributes, inflatable)
            coordinate = (topic, partition)
            packed = pack_records(payload, record_count, topic.encode(), partition, state.next_offset,
                                  self._previous.get(coordinate, UNKNOWN_OFFSET), state.stream_start, attributes,
                                  base_timestamp, max_timestamp, self._assignment, self.state.topic_ids.get(topic),
                                  self.config.max_record_size)
        except BatchError as error:
            plan.code, plan.message = error.code, str(error)
            log.info(f"link {self.link_name}: refused a batch for {topic}[{partition}]: {error}",
                     extra={"fields": {"link": self.link_name, "topic": topic, "partition": partition,
                                       "error_code": error.code}})
            return plan
        plan.records = packed
        plan.size = packed.size
        plan.base_offset = self.state.assign(topic, partition, record_count, producer_id,
                                             epoch, first_sequence, changes)
        if producer_id >= 0:
            plan.batch = Batch(first_sequence, record_count, plan.base_offset, None)
            plan.producer_id, plan.epoch = producer_id, epoch
        return plan

    def _retry(self, plan: Planned, batch: Batch, records, start, end, attributes, record_count, base_timestamp,
               max_timestamp, state, producer_id, epoch, inflatable: list) -> Planned:
        """A batch this listener has taken before: answered with its offsets. One from before a restart, which
        may not have gone out, is sent again under them (the egress drops it if it had)."""
        self.retries_answered += 1
        plan.batch, plan.base_offset = batch, batch.base_offset
        if batch.sent_at is not None:
            return plan
        payload = self._payload(records, start, end, attributes, inflatable)
        plan.records = pack_records(payload, record_count, plan.topic.encode(), plan.partition, batch.base_offset,
                                    batch.base_offset - 1, state.stream_start, attributes, base_timestamp,
                                    max_timestamp, self._assignment, self.state.topic_ids.get(plan.topic),
                                    self.config.max_record_size)
        plan.size = plan.records.size
        plan.resend = True
        plan.producer_id, plan.epoch = producer_id, epoch
        return plan

    @staticmethod
    def _payload(records, start: int, end: int, attributes: int, inflatable: list):
        """A batch's records, inflated within what is left of the request's max_request_size."""
        payload = batch_payload(records, start, end, attributes, inflatable[0])
        if attributes & COMPRESSION_MASK:
            inflatable[0] -= len(payload)
        return payload

    # ---- into the link ----

    def _enqueue(self, records, size: int) -> None:
        """records: a batch's PackedRecords, or a list of (metadata, value) made in Python."""
        self._enqueued += len(records)
        self._in_use += size
        self._pending.put((records, size))

    def _announce_positions(self) -> None:
        """Tells the egress how far each partition has been sent, so losses at a stream's end are reported too."""
        self._positions_announced = time.monotonic()
        positions = [(codec.pack(POSITION, topic, partition, offset, offset,
                                 self.state.partition(topic, partition).stream_start, 0, -1, None, None, False,
                                 self._assignment, self.state.topic_ids.get(topic)), b"")
                     for (topic, partition), offset in self._previous.items() if offset != UNKNOWN_OFFSET]
        if positions:
            self._enqueue(positions, len(positions) * RECORD_OVERHEAD)

    def _pump(self) -> None:
        """Moves packed records into the link's buffer, in order, waiting while it is full."""
        while True:
            item = self._pending.get()
            if item is None:
                return
            records, size = item
            if isinstance(records, PackedRecords):
                while not records.put_into(self._output, PUT_WAIT_SECONDS) and not self._abandon.is_set():
                    pass
                left = records.left
            else:
                while records and not self._abandon.is_set():
                    records = records[self._output.put_many(records, timeout=PUT_WAIT_SECONDS):]
                left = len(records)
            if self._pending.empty():
                self._output.flush()  # producers wait for their answers: no linger for more records
            if left:
                log.warning(f"link {self.link_name}: stopping with {left} records not put in the link's "
                            "buffer; their producers are not answered", extra={"fields": {"link": self.link_name}})
            self._call_in_loop(self._release, size)

    def acknowledge(self, count: int) -> None:
        with self._acknowledged_lock:
            self._link_acknowledged += count
        self._call_in_loop(self._settle)

    def _call_in_loop(self, function, *arguments) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *arguments)
        except (AttributeError, RuntimeError):
            pass  # no loop, or it has ended: nobody waits for an answer or for room any more

    def _settle(self) -> None:
        with self._acknowledged_lock:
            self._acknowledged = self._link_acknowledged
        while self._waiting and self._waiting[0][0] <= self._acknowledged:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)

    def counters(self) -> dict:
        counters = {"kafka_listener_connections_accepted": self.connections_accepted,
                    "kafka_listener_connections_open": len(self._connections),
                    "kafka_listener_records_in": self.records_in, "kafka_listener_bytes_in": self.bytes_in,
                    "kafka_listener_retries_answered": self.retries_answered,
                    "kafka_listener_records_resent": self.records_resent,
                    "kafka_listener_produce_seconds": self.produce_seconds,
                    "kafka_listener_produce_answers": self.produce_answers,
                    "kafka_listener_backpressure_seconds": self.backpressure_seconds,
                    "kafka_listener_records_unacknowledged": self._enqueued - self._acknowledged}
        counters.update({f"kafka_listener_connections_closed_{reason}": count
                         for reason, count in self.closed.items()})
        counters.update({f"kafka_listener_requests_{api}": count for api, count in self.requests.items()})
        counters.update({f"kafka_listener_produce_errors_{error}": count
                         for error, count in self.produce_errors.items()})
        return counters


def batch_payload(records, start: int, end: int, attributes: int, limit: int):
    """A batch's records, inflated; at most limit bytes once inflated."""
    compressed = memoryview(records)[start + BATCH_HEADER_BYTES:end]
    compression = attributes & COMPRESSION_MASK
    if compression == 0:
        return compressed
    name = COMPRESSIONS.get(compression)
    if name is None:
        raise BatchError(UNSUPPORTED_COMPRESSION_TYPE, f"compression type {compression} is not one Kafka has")
    try:
        if name == "snappy":
            return snappy(compressed, limit)
        return inflate(getattr(cramjam, name).decompress_into, compressed, limit)
    except cramjam.DecompressionError as error:
        raise BatchError(CORRUPT_MESSAGE, f"a {name} batch does not decompress: {error}") from None


def snappy(compressed, limit: int):
    """Snappy as Java writes it (xerial framing: a header, then length-prefixed blocks) or as librdkafka does (one
    raw block)."""
    if bytes(compressed[:8]) != XERIAL_MAGIC:
        return inflate_snappy_block(compressed, limit)
    parts, position, total = [], 16, 0
    while position < len(compressed):
        if position + 4 > len(compressed):
            raise BatchError(CORRUPT_MESSAGE, "a snappy block's length is cut short")
        length = int.from_bytes(compressed[position:position + 4], "big")
        block = compressed[position + 4:position + 4 + length]
        if len(block) != length:
            raise BatchError(CORRUPT_MESSAGE, "a snappy block is cut short")
        part = inflate_snappy_block(block, limit - total)
        total += len(part)
        parts.append(part)
        position += 4 + length
    return b"".join(parts)


def inflate(decompress_into, compressed, limit: int):
    """Decompresses into a buffer that grows to at most limit bytes: a batch cannot make the listener allocate
    more than it would take uncompressed."""
    capacity = min(limit, max(4 * len(compressed), 1 << 16))
    while True:
        output = bytearray(capacity)
        try:
            written = decompress_into(compressed, output)
        except cramjam.DecompressionError as error:
            if capacity >= limit or "whole buffer" not in str(error) and "smaller than" not in str(error):
                if capacity >= limit:
                    raise BatchError(BATCH_TOO_LARGE, f"the request's batches decompress to more than "
                                                      f"max_request_size ({limit} bytes left of it)") from None
                raise
            capacity = min(limit, capacity * 4)
            continue
        return memoryview(output)[:written]


def inflate_snappy_block(block, limit: int):
    length = cramjam.snappy.decompress_raw_len(block)
    if length > limit:
        raise BatchError(BATCH_TOO_LARGE, f"a snappy block decompresses to {length} bytes, more than is left of "
                                          f"max_request_size ({limit} bytes) for the request")
    output = bytearray(length)
    written = cramjam.snappy.decompress_raw_into(block, output)
    return memoryview(output)[:written]


def server_tls(tls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.certificate, tls.key)
        if tls.client_ca:
            context.load_verify_locations(tls.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise OSError(f"the listener's TLS files cannot be used ({error}); check source.tls.certificate, key and "
                      "client_ca") from None
    return context


def format_peer(peer) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return str(peer)

"""What a Kafka listener remembers across restarts: offsets, topic ids, producer ids and producers' sequences.

Offsets must never go back, because the egress drops as a duplicate any record at
or below the highest offset it delivered of a partition; and an idempotent
producer's retry that reaches a restarted ingress must be recognised, or it is
sent again under new offsets and arrives twice. So everything is written ahead:
a batch's offsets and sequence numbers reach the journal before its records go
into the link's buffer. The journal is one JSON line per change, appended with
one write() (the kernel keeps it through a SIGKILL of the process); a line cut
short by a crash is ignored. The journal is folded into a snapshot, written
aside and renamed into place, once it grows long; replaying a journal over the
snapshot it was already folded into changes nothing, so a crash between the
rename and the truncation is harmless.

What a restart cannot know is whether the records of the last batches went out
before the crash. Their offsets are not used again; the first record after the
restart carries the last offset assigned as its previous offset, so the egress
reports those it never received as missing, and a producer's retry of such a
batch is sent again under its original offsets, which settles the report
(or is dropped as the duplicate it is). The producer was never answered for
them: nothing it was told is lost.
"""

import collections
import fcntl
import json
import logging
import os
import secrets
from pathlib import Path

from ddc.errors import ConfigError

log = logging.getLogger("ddc.handlers.kafka_listener")

JOURNAL_LINES_BEFORE_SNAPSHOT = 20000
MAX_PRODUCERS = 10000          # producer ids whose sequences are kept; the least recently seen are forgotten
BATCHES_KEPT = 5               # per producer and partition, as Kafka keeps (max.in.flight.requests.per.connection)
SEQUENCE_WRAP = 1 << 31
FIRST_PRODUCER_ID = 1000


class Batch:
    """A producer's batch as far as retries go: its sequence numbers and the offsets it was given. `sent_at` is
    the listener's count of records put in the link's buffer once this batch's were (None: from before a
    restart, when it is unknown whether they went out)."""

    __slots__ = ("first_sequence", "last_sequence", "base_offset", "count", "sent_at")

    def __init__(self, first_sequence: int, count: int, base_offset: int, sent_at):
        self.first_sequence = first_sequence
        self.last_sequence = (first_sequence + count - 1) % SEQUENCE_WRAP
        self.base_offset = base_offset
        self.count = count
        self.sent_at = sent_at


class Sequences:
    """One producer id's batches in one partition."""

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int):
        self.epoch = epoch
        self.batches = collections.deque(maxlen=BATCHES_KEPT)


class Partition:
    __slots__ = ("next_offset", "stream_start")

    def __init__(self, next_offset: int = 0, stream_start: int = 0):
        self.next_offset = next_offset
        self.stream_start = stream_start


class ListenerState:
    """`<state_directory>/<link>.kafka_listener.journal` and `.snapshot`, locked by one process at a time."""

    def __init__(self, directory: str, link_name: str):
        self.directory = Path(directory)
        self.journal_path = self.directory / f"{link_name}.kafka_listener.journal"
        self.snapshot_path = self.directory / f"{link_name}.kafka_listener.snapshot"
        self.topic_ids: dict[str, bytes] = {}
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.producers: collections.OrderedDict = collections.OrderedDict()  # id -> {(topic, partition): Sequences}
        self.epochs: collections.OrderedDict = collections.OrderedDict()  # producer id -> epoch, newest last
        self.next_producer_id = FIRST_PRODUCER_ID
        self._journal = None
        self._lines = 0
        self._claim()
        self._load()

    # ---- files ----

    def _claim(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._journal = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                                    | os.O_NOFOLLOW, 0o600)
            fcntl.flock(self._journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"another process holds the Kafka listener state {self.journal_path}: give each "
                              "proxy its own source.state_directory (or its links their own names)") from None
        except OSError as error:
            self.close()
            raise ConfigError(f"cannot use the Kafka listener state {self.journal_path}: {error.strerror}; "
                              "source.state_directory must be writable by the user ddc runs as") from None

    def close(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None

    def _load(self) -> None:
        try:
            if self.snapshot_path.exists():
                self._restore(json.loads(self.snapshot_path.read_text()))
            with open(self.journal_path, "rb") as journal:
                lines = journal.read().split(b"\n")
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"the Kafka listener state in {self.directory} cannot be read ({error}); restore it "
                              "from a backup. Deleting it restarts every partition's offsets under new topic ids "
                              "(the egress then takes them as new topics)") from None
        for number, line in enumerate(lines[:-1]):
            if not line:
                continue
            try:
                self._apply(json.loads(line))
            except (ValueError, TypeError, KeyError, IndexError) as error:
                raise ConfigError(f"line {number + 1} of {self.journal_path} is damaged ({error}); restore the "
                                  "state from a backup") from None
            self._lines += 1
        if lines[-1]:
            # The last line, cut short by a crash (or a full disk) while it was written: never applied, so its
            # batch was never sent. It goes, or the next line would be appended to it.
            os.ftruncate(self._journal, sum(len(line) + 1 for line in lines[:-1]))

    def _restore(self, snapshot: dict) -> None:
        self.next_producer_id = int(snapshot["next_producer_id"])
        for topic, fields in snapshot["topics"].items():
            self.topic_ids[topic] = bytes.fromhex(fields["id"])
            for partition, (next_offset, stream_start) in fields["partitions"].items():
                self.partitions[(topic, int(partition))] = Partition(int(next_offset), int(stream_start))
        for producer_id, epoch in snapshot["epochs"]:
            self._note_epoch(int(producer_id), int(epoch))
        for producer_id, topic, partition, epoch, batches in snapshot["producers"]:
            sequences = self._sequences(int(producer_id), topic, int(partition), int(epoch))
            for first_sequence, count, base_offset in batches:
                sequences.batches.append(Batch(int(first_sequence), int(count), int(base_offset), None))

    def _apply(self, change: dict) -> None:
        if "topic" in change:
            self.topic_ids.setdefault(change["topic"], bytes.fromhex(change["id"]))
        elif "batch" in change:
            topic, partition, base_offset, count, producer_id, epoch, first_sequence = change["batch"]
            self._assigned(topic, partition, base_offset, count)
            if producer_id >= 0:
                sequences = self._sequences(producer_id, topic, partition, epoch)
                if not any(batch.first_sequence == first_sequence and batch.base_offset == base_offset
                           for batch in sequences.batches):
                    sequences.batches.append(Batch(first_sequence, count, base_offset, None))
        elif "producer" in change:
            producer_id, epoch = change["producer"]
            self.next_producer_id = max(self.next_producer_id, producer_id + 1)
            self._note_epoch(producer_id, epoch)
        else:
            raise ValueError(f"unknown change {change!r}")

    def write(self, changes: list[dict]) -> None:
        """Appends the changes, already applied, to the journal in one write; folds it into the snapshot when it
        has grown long."""
        if not changes:
            return
        data = b"".join(json.dumps(change, separators=(",", ":")).encode() + b"\n" for change in changes)
        before = os.fstat(self._journal).st_size
        try:
            written = os.write(self._journal, data)
        except OSError:
            written = -1
        if written != len(data):
            os.ftruncate(self._journal, before)  # no part of the changes stays for the next line to be glued to
            raise OSError(f"the Kafka listener journal {self.journal_path} took {max(written, 0)} of {len(data)} "
                          "bytes (is the disk full?)")
        self._lines += len(changes)
        if self._lines >= JOURNAL_LINES_BEFORE_SNAPSHOT:
            self._fold()

    def _fold(self) -> None:
        snapshot = {
            "next_producer_id": self.next_producer_id,
            "topics": {topic: {"id": topic_id.hex(),
                               "partitions": {str(partition): [state.next_offset, state.stream_start]
                                              for (name, partition), state in self.partitions.items()
                                              if name == topic}}
                       for topic, topic_id in self.topic_ids.items()},
            "epochs": list(self.epochs.items()),
            "producers": [[producer_id, topic, partition, sequences.epoch,
                           [[batch.first_sequence, batch.count, batch.base_offset] for batch in sequences.batches]]
                          for producer_id, partitions in self.producers.items()
                          for (topic, partition), sequences in partitions.items()],
        }
        aside = self.snapshot_path.with_name(self.snapshot_path.name + ".new")
        descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(json.dumps(snapshot, separators=(",", ":")))
        os.replace(aside, self.snapshot_path)
        os.ftruncate(self._journal, 0)
        self._lines = 0

    # ---- the model ----

    def topic_id(self, topic: str, changes: list) -> bytes:
        """The topic's id, made (and journalled) the first time the topic is used."""
        topic_id = self.topic_ids.get(topic)
        if topic_id is None:
            topic_id = self.topic_ids[topic] = secrets.token_bytes(16)
            changes.append({"topic": topic, "id": topic_id.hex()})
        return topic_id

    def partition(self, topic: str, partition: int) -> Partition:
        state = self.partitions.get((topic, partition))
        if state is None:
            state = self.partitions[(topic, partition)] = Partition()
        return state

    def _assigned(self, topic: str, partition: int, base_offset: int, count: int) -> None:
        state = self.partition(topic, partition)
        state.next_offset = max(state.next_offset, base_offset + count)

    def assign(self, topic: str, partition: int, count: int, producer_id: int, epoch: int, first_sequence: int,
               changes: list) -> int:
        """Gives a batch its offsets; returns the first."""
        base_offset = self.partition(topic, partition).next_offset
        self._assigned(topic, partition, base_offset, count)
        changes.append({"batch": [topic, partition, base_offset, count, producer_id, epoch, first_sequence]})
        return base_offset

    def _sequences(self, producer_id: int, topic: str, partition: int, epoch: int) -> Sequences:
        partitions = self.producers.get(producer_id)
        if partitions is None:
            partitions = self.producers[producer_id] = {}
            while len(self.producers) > MAX_PRODUCERS:
                forgotten, _ = self.producers.popitem(last=False)
                self.epochs.pop(forgotten, None)
        else:
            self.producers.move_to_end(producer_id)
        sequences = partitions.get((topic, partition))
        if sequences is None or epoch > sequences.epoch:
            sequences = partitions[(topic, partition)] = Sequences(epoch)
        return sequences

    def known_sequences(self, producer_id: int, topic: str, partition: int) -> Sequences | None:
        partitions = self.producers.get(producer_id)
        return None if partitions is None else partitions.get((topic, partition))

    def remember(self, producer_id: int, topic: str, partition: int, epoch: int, batch: Batch) -> None:
        self._sequences(producer_id, topic, partition, epoch).batches.append(batch)

    def new_producer(self, producer_id: int, epoch: int, changes: list) -> tuple[int, int]:
        """InitProducerId: a new id at epoch 0, or, for a producer that names its current id and epoch (KIP-360),
        the next epoch of the same id (a new id once the epoch would overflow)."""
        if producer_id >= 0 and self.epochs.get(producer_id) == epoch and epoch < 32766:
            epoch += 1
        else:
            producer_id, epoch = self.next_producer_id, 0
            self.next_producer_id += 1
        self._note_epoch(producer_id, epoch)
        changes.append({"producer": [producer_id, epoch]})
        return producer_id, epoch

    def _note_epoch(self, producer_id: int, epoch: int) -> None:
        """Producer ids given out are kept for the MAX_PRODUCERS last, whether they have written or not."""
        self.epochs[producer_id] = epoch
        self.epochs.move_to_end(producer_id)
        while len(self.epochs) > MAX_PRODUCERS:
            self.epochs.popitem(last=False)

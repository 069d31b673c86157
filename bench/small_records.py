"""Small records through the whole core path, two processes, loopback.

    python bench/small_records.py [--records 3000000] [--results bench/results-small-records.json]

The sending process packs lists of 100-byte records into batches (encode_batch)
and sends them as frames (DatagramSender); the receiving process reassembles
(LinkReceiver) and unpacks them (decode_batch) back into lists of records. The
figure is records per second from the first to the last batch received. Gate
(issue #3): at least 1 000 000 records/s with none lost.
"""

import argparse
import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = (b"10.0.0.1:514", b"x" * 100)
BATCH_RECORDS = 8000  # about 1 MiB per batch with this record and its metadata
GATE_RECORDS_PER_SECOND = 1_000_000


def receive(port: int, batches_expected: int, results) -> None:
    from ddc._core.receiver import LinkReceiver
    from ddc._core.records import decode_batch
    from ddc.transport.sockets import set_buffer
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_buffer(sock, "receive", 64 << 20)
    sock.bind(("127.0.0.1", port))
    receiver = LinkReceiver()
    results.put("ready")
    records, batches, first, last = 0, 0, 0.0, 0.0
    idle_since = time.monotonic()
    while batches < batches_expected and time.monotonic() - idle_since < 2.0:
        for frame in receiver.receive(sock.fileno(), 100):
            records += len(decode_batch(frame))
            batches += 1
            last = idle_since = time.monotonic()
            first = first or last
    results.put({"records": records, "batches": batches, "seconds": last - first,
                 "datagrams_lost": receiver.counters()["datagrams_lost"]})


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    from ddc._core.records import encode_batch
    from ddc._core.sender import DatagramSender
    from ddc.transport.sockets import socket_address_bytes
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--rate", default=300e6, type=float, help="link pacing, bytes/s (default 300 MB/s)")
    parser.add_argument("--results", default=str(HERE / "results-small-records.json"))
    arguments = parser.parse_args()
    batches = max(arguments.records // BATCH_RECORDS, 2)
    port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port.bind(("127.0.0.1", 0))
    port_number = port.getsockname()[1]
    port.close()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    receiving = context.Process(target=receive, args=(port_number, batches, results))
    receiving.start()
    assert results.get(timeout=30) == "ready"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = DatagramSender(sock.fileno(), socket_address_bytes(socket.AF_INET, ("127.0.0.1", port_number)),
                            int.from_bytes(os.urandom(8), "big") or 1, 8972, arguments.rate, 256 * 1024)
    batch = [RECORD] * BATCH_RECORDS
    for _ in range(batches):
        sender.send_frame(encode_batch(batch, time.time_ns()))
    received = results.get(timeout=120)
    receiving.join(10)
    sock.close()
    counted = received["records"] - BATCH_RECORDS  # timed from the first batch's arrival
    rate = counted / received["seconds"] if received["seconds"] else 0.0
    complete = received["records"] == batches * BATCH_RECORDS and received["datagrams_lost"] == 0
    passed = rate >= GATE_RECORDS_PER_SECOND and complete
    print(f"small records: {rate:,.0f} records/s of 100 bytes, {received['records']:,} of "
          f"{batches * BATCH_RECORDS:,} received (gate >= {GATE_RECORDS_PER_SECOND:,}, none lost): "
          f"{'pass' if passed else 'FAIL'}")
    Path(arguments.results).write_text(json.dumps({"figures": [{
        "name": "small records per second", "value": rate, "gate": f">= {GATE_RECORDS_PER_SECOND}",
        "passed": passed, "records_received": received["records"], "records_sent": batches * BATCH_RECORDS}]},
        indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

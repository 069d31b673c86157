"""Small records through the whole core path, two processes, loopback.

    python bench/small_records.py [--records 3000000] [--results bench/results-small-records.json]

The sending process puts lists of 100-byte records into the ingress's record
ring (RecordRing.put_many), takes them out as runs and sends each run in place
behind its batch header as a frame (DatagramSender); the receiving process reassembles
(LinkReceiver) and unpacks them (decode_batch) back into lists of records. The
figure is records per second from the first to the last batch received. Gate
(issue #3): at least 1 000 000 records/s with none lost.
"""

import argparse
import json
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import DrainingReceiver, count_records  # noqa: E402

RECORD = (b"10.0.0.1:514", b"x" * 100)
BATCH_RECORDS = 8000  # about 1 MiB per batch with this record and its metadata
GATE_RECORDS_PER_SECOND = 1_000_000


def main() -> int:
    from ddc._core.records import batch_header, record_size
    from ddc._core.ring import RecordRing
    from ddc._core.sender import DatagramSender
    from ddc.transport.sockets import socket_address_bytes
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--rate", default=300e6, type=float, help="link pacing, bytes/s (default 300 MB/s)")
    parser.add_argument("--results", default=str(HERE / "results-small-records.json"))
    arguments = parser.parse_args()
    batches = max(arguments.records // BATCH_RECORDS, 2)
    receiving = DrainingReceiver(batches, count_records)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = DatagramSender(sock.fileno(), socket_address_bytes(socket.AF_INET, ("127.0.0.1", receiving.port)),
                            int.from_bytes(os.urandom(8), "big") or 1, 8972, arguments.rate, 256 * 1024)
    batch = [RECORD] * BATCH_RECORDS
    ring = RecordRing(64 << 20, "block")
    for _ in range(batches):
        ring.put_many(batch)
        run, count, taken_in_ns = ring.take(BATCH_RECORDS * record_size(RECORD), 0)
        sender.send_frame(run, batch_header(count, taken_in_ns))
        ring.free_taken()
    received = receiving.result()
    sock.close()
    records = received["handled"]
    counted = records - BATCH_RECORDS  # timed from the first batch's arrival
    rate = counted / received["seconds"] if received["seconds"] else 0.0
    complete = records == batches * BATCH_RECORDS and received["counters"]["datagrams_lost"] == 0
    passed = rate >= GATE_RECORDS_PER_SECOND and complete
    print(f"small records: {rate:,.0f} records/s of 100 bytes, {records:,} of "
          f"{batches * BATCH_RECORDS:,} received (gate >= {GATE_RECORDS_PER_SECOND:,}, none lost): "
          f"{'pass' if passed else 'FAIL'}")
    Path(arguments.results).write_text(json.dumps({"figures": [{
        "name": "small records per second", "value": rate, "gate": f">= {GATE_RECORDS_PER_SECOND}",
        "passed": passed, "records_received": records, "records_sent": batches * BATCH_RECORDS}]},
        indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Performance per side: the CPU time DDC's sender and its receiver each spend per GiB of frames, alone.

    python bench/per_side.py [--quick] [--results bench/results-per-side.json]

Why (issue #24): bench/transport.py and bench/fec.py gate encryption and FEC by the
throughput of a DDC sender and a DDC receiver sharing this machine's two cores, which
no deployment does: the ingress and the egress run on either side of a diode, each on
its own machine. Here each side runs alone against a C counterpart that does next to
nothing, and the figure is the CPU time (user + system) of the one DDC thread doing
the work, per GiB of frames:

1. Sender side: DatagramSender as ddc/ingress.py drives it (the ingress transport's
   default send buffer and segmentation offload, no heartbeats), 1 MiB frames handed
   in from memory with send_frame (64 of them in turn, more than the caches hold, as
   a source's batches would be), paced at 80 % of the C pair's lossless rate, to
   bench/kernel_baseline.c recv, which counts what arrives. Measured:
   getrusage(RUSAGE_THREAD) of the thread calling send_frame. On loopback the kernel
   delivers each datagram into the receiving socket (and wakes the receiver) within
   the sender's system call, so that work counts on this side, as it does for the C
   sender.
2. Receiver side: the datagrams a DatagramSender makes for the configuration are
   captured into a file once (bench/datagram_replay.c capture), then sent again from
   the page cache with sendmmsg, 4 MiB at a time, each chunk once the receiver has
   emptied its socket (datagram_replay replay): a chunk fits in the egress's receive
   buffer, so nothing is lost, and the receiver works through it without sleeping.
   (Paced evenly instead, the C sender is the slower of the two on loopback, since the
   kernel's receive path runs in its system call: it wakes the receiver every few
   datagrams, and the wake-ups would cost the receiver more than the datagrams.) The
   LinkReceiver is set up and driven as ddc/egress.py does (the egress transport's
   defaults, receive() and take_events() in a loop); each frame is handed out and
   dropped. Measured: RUSAGE_THREAD of the receiving thread. A run that loses
   anything (a datagram not received, a sequence gap, a frame missing) is reported
   and run again, twice at most; if every try lost, the figure is INVALID.
3. C baseline, per GiB of datagrams: kernel_baseline send paced as in 1, and
   datagram_replay drain fed as in 2 (recvmmsg until the socket is empty, nothing
   else), each process's own CPU time (wait4): the least a side can cost here.

Configurations: plain, sealed (AES-256-GCM, a key on both sides), FEC 25 % (64 data +
16 parity datagrams, interleave 4, as in bench/fec.py; a frame of few datagrams gets a
larger share, printed) and sealed + FEC, at 1 472, 8 972 and 65 507-byte datagrams.
Each repetition runs every configuration in turn (sender, then receiver), then the C
baseline.

Gates, on ratios within one repetition, median of the repetitions: sealed <= 1.5 x
plain on each side; FEC 25 % <= 1.6 x plain for the sender and <= 1.4 x plain for the
receiver. Sealed + FEC is reported, not gated. Prints the CPU features present
(/proc/cpuinfo), the AES library ddc.crypto picked and the GF(256) multiply FEC
uses, then a markdown table for docs/performance.md and, for each gate missed, by
how much. Writes JSON with --results. Exits 1 if a gate is missed or a figure is
invalid. --quick: 3 repetitions of 256 MiB instead of 5 of 1 GiB.
"""

import argparse
import json
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from transport import FRAME_BYTES, CReceiver, baseline, compile_baseline  # noqa: E402  (puts the checkout first)
from harness import GateTable  # noqa: E402

from ddc.config.transport import EgressTransportConfig, IngressTransportConfig  # noqa: E402
from ddc.transport.sockets import KernelDrops, free_udp_port, open_bound, open_sending  # noqa: E402

GIB = 1 << 30
SIZES = (1472, 8972, 65507)
FEC_25 = (64, 16, 4)  # data, parity, interleave
CONFIGURATIONS = {"plain": (False, None), "sealed": (True, None), "FEC 25 %": (False, FEC_25),
                  "sealed + FEC": (True, FEC_25)}
GATES = {("sender", "sealed"): 1.5, ("sender", "FEC 25 %"): 1.6,
         ("receiver", "sealed"): 1.5, ("receiver", "FEC 25 %"): 1.4}
SIDES = ("sender", "receiver")
KEY, KEY_ID = os.urandom(32), 1
SOURCE_FRAMES = 64
TRIES = 3  # a lossy run is reported and run again, at most this many times in all
CHUNK_BYTES = 4 << 20  # what the receiver finds waiting at a time: well within the egress's receive buffer
CPU_FLAGS = ("gfni", "avx512f", "avx512bw", "avx2", "vaes", "vpclmulqdq", "aes", "pclmulqdq",  # x86_64
             "asimd", "pmull", "sve")  # aarch64 (its NEON is "asimd")


def compile_replay(directory: Path) -> Path:
    binary = directory / "datagram_replay"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "datagram_replay.c")], check=True)
    return binary


def thread_cpu() -> tuple[float, float]:
    """User and system CPU seconds of the calling thread so far."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def reap(process: subprocess.Popen) -> tuple[float, float]:
    """Waits for a child process; returns the user and system CPU seconds it used."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime, usage.ru_stime


def per_gib(before: tuple[float, float], after: tuple[float, float], data_bytes: int) -> dict:
    """CPU seconds per GiB of data_bytes, in all and split into user and system."""
    gibibytes = data_bytes / GIB
    user, system = after[0] - before[0], after[1] - before[1]
    return {"cpu_per_gib": (user + system) / gibibytes, "user_per_gib": user / gibibytes,
            "system_per_gib": system / gibibytes}


def ddc_sender(port: int, size: int, rate: float, sealed: bool, fec):
    """A DatagramSender to 127.0.0.1:port set up as ddc/ingress.py sets it up; (socket, sender)."""
    from ddc._core.sender import DatagramSender
    transport = IngressTransportConfig(destination=f"127.0.0.1:{port}", datagram_size=size, rate=rate)
    sock, _, address = open_sending(transport.destination, send_buffer=transport.send_buffer)
    sender = DatagramSender(sock.fileno(), address, int.from_bytes(os.urandom(8), "big") | 1, size, transport.rate,
                            transport.burst_bytes, 0.0, transport.segmentation_offload)
    if sealed:
        sender.encrypt_with(KEY, KEY_ID)
    if fec:
        sender.protect_with(*fec)
    return sock, sender


def sender_side(kernel_binary: Path, size: int, configuration: str, frames: int, rate: float,
                source: list[bytes]) -> dict:
    """DDC sender to the C receiver: the sending thread's CPU per GiB of frames, and what the C receiver missed."""
    port = free_udp_port()
    counter = CReceiver(kernel_binary, port, size, idle_ms=300)
    sock, sender = ddc_sender(port, size, rate, *CONFIGURATIONS[configuration])
    started = thread_cpu()
    for index in range(frames):
        sender.send_frame(source[index % len(source)])
    cpu = per_gib(started, thread_cpu(), frames * FRAME_BYTES)
    sock.close()
    received, _, _ = counter.result()
    sent = sender.counters()
    return {**cpu, "datagrams_sent": sent["datagrams_sent"],
            "parity_sent": sent["parity_sent"], "segmented_sends": sent["segmented_sends"],
            "datagrams_lost": sent["datagrams_sent"] - received}


def capture(replay_binary: Path, path: Path, size: int, configuration: str, frames: int, rate: float,
            source: list[bytes]) -> dict:
    """The datagrams a DatagramSender makes for frames frames, captured into path; halves the pace if any is lost."""
    for _ in range(TRIES):
        port = free_udp_port()
        capturing = subprocess.Popen([str(replay_binary), "capture", str(port), str(path), "300"],
                                     stdout=subprocess.PIPE, text=True)
        assert capturing.stdout.readline().strip() == "ready"
        sock, sender = ddc_sender(port, size, rate, *CONFIGURATIONS[configuration])
        for index in range(frames):
            sender.send_frame(source[index % len(source)])
        sock.close()
        out, _ = capturing.communicate(timeout=600)
        datagrams, data_bytes = map(int, out.split())
        if datagrams == sender.datagrams_sent:
            return {"path": path, "frames": frames, "datagrams": datagrams, "bytes": data_bytes,
                    "parity": sender.parity_sent, "sealed": CONFIGURATIONS[configuration][0]}
        rate /= 2
    raise RuntimeError(f"capturing {configuration} at {size} B lost datagrams at every pace tried")


class Feeder:
    """datagram_replay replay: the captured datagrams sent a chunk at a time, each when asked for."""

    def __init__(self, replay_binary: Path, path: Path, port: int, size: int):
        chunk = max(CHUNK_BYTES // size, 16)
        self.process = subprocess.Popen([str(replay_binary), "replay", str(path), "127.0.0.1", str(port), str(chunk)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def send_chunk(self) -> bool:
        """Sends the next chunk, returning once the kernel has all of it; False when everything was sent."""
        os.write(self.process.stdin.fileno(), b"g")
        answer = os.read(self.process.stdout.fileno(), 1)
        if answer not in (b"c", b"e"):
            raise RuntimeError(f"datagram_replay replay failed (exit status {self.process.wait()})")
        return answer == b"c"

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def drain(receiver, fd: int, readable) -> int:
    """Runs the receiver as ddc/egress.py does until the socket is empty; the frames it handed out (then dropped)."""
    frames = 0
    while True:
        handed_out = receiver.receive(fd, 0)
        receiver.take_events()
        if handed_out:
            frames += len(handed_out)
        elif not receiver.batch_pending and not readable.poll(0):
            return frames


def receiver_side(replay_binary: Path, captured: dict, size: int) -> dict:
    """The captured datagrams, chunk after chunk, to a LinkReceiver set up as ddc/egress.py sets it up: the
    receiving thread's CPU per GiB of frames, and whatever was lost."""
    from ddc._core.receiver import LinkReceiver
    port = free_udp_port()
    transport = EgressTransportConfig(listen=f"127.0.0.1:{port}")
    sock = open_bound(transport.listen, receive_buffer=transport.receive_buffer)
    receiver = LinkReceiver(transport.max_frame_size, transport.max_frames_in_flight, transport.max_bytes_in_flight,
                            transport.frame_timeout, transport.session_takeover_after,
                            transport.max_fec_bytes_in_flight)
    if captured["sealed"]:
        receiver.add_key(KEY, KEY_ID)
    readable = select.poll()
    readable.register(sock.fileno(), select.POLLIN)
    feeder = Feeder(replay_binary, captured["path"], port, size)
    frames = 0
    started = thread_cpu()
    while feeder.send_chunk():
        frames += drain(receiver, sock.fileno(), readable)
    cpu = per_gib(started, thread_cpu(), captured["frames"] * FRAME_BYTES)
    feeder.close()
    time.sleep(0.05)
    frames += drain(receiver, sock.fileno(), readable)  # anything the kernel still held: lost if it were not
    counters = receiver.counters()
    kernel_drops = KernelDrops(sock).read()
    sock.close()
    frames_missing = captured["frames"] - frames
    lost = captured["datagrams"] - counters["datagrams_received"] + counters["datagrams_lost"] + frames_missing
    return {**cpu, "datagrams_lost": lost,
            "kernel_receive_drops": kernel_drops, "sequence_gaps": counters["datagrams_lost"],
            "frames_missing": frames_missing, "dropped_forged": counters["dropped_forged"]}


def kernel_sender(kernel_binary: Path, size: int, volume: int, rate: float) -> dict:
    """kernel_baseline send to kernel_baseline recv at rate: the sender's CPU per GiB of datagrams."""
    count = volume // size
    port = free_udp_port()
    counter = CReceiver(kernel_binary, port, size, idle_ms=300)
    sending = subprocess.Popen([str(kernel_binary), "send", "127.0.0.1", str(port), str(size), str(count), str(rate)])
    cpu = per_gib((0.0, 0.0), reap(sending), count * size)
    received, _, _ = counter.result()
    return {**cpu, "datagrams_lost": count - received}


def kernel_receiver(replay_binary: Path, captured: dict, size: int) -> dict:
    """The captured datagrams, chunk after chunk as for DDC, to datagram_replay drain: its CPU per GiB of
    datagrams."""
    port = free_udp_port()
    draining = subprocess.Popen([str(replay_binary), "drain", str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, bufsize=0)
    assert draining.stdout.readline().strip() == b"ready"
    feeder = Feeder(replay_binary, captured["path"], port, size)
    while feeder.send_chunk():
        os.write(draining.stdin.fileno(), b"g")
        os.read(draining.stdout.fileno(), 1)
    feeder.close()
    time.sleep(0.05)
    os.write(draining.stdin.fileno(), b"g")
    os.read(draining.stdout.fileno(), 1)
    draining.stdin.close()
    cpu = per_gib((0.0, 0.0), reap(draining), captured["bytes"])
    received = int(draining.stdout.read().split()[0])
    return {**cpu, "datagrams_lost": captured["datagrams"] - received}


def until_lossless(run, failures: list, description: str) -> dict | None:
    """run() until it loses nothing, TRIES times at most; each lossy try is reported. None if all lost."""
    for _ in range(TRIES):
        outcome = run()
        if outcome["datagrams_lost"] == 0:
            return outcome
        failures.append({"run": description, **outcome})
        print(f"  LOSS: {description} lost {outcome['datagrams_lost']} datagrams", flush=True)
    return None


def cpu_description() -> dict:
    """The CPU's model and which of the flags that matter here it has."""
    model, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "CPU part") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"machine": platform.machine(), "model": model, "cores": os.cpu_count(),
            "flags": {flag: flag in flags for flag in CPU_FLAGS}}


def implementations() -> dict:
    """The AES-256-GCM library ddc.crypto picks (it times each one it can load), and the GF(256) multiply."""
    from ddc._core import aead, fec
    from ddc.crypto import load_sealing_library
    chosen = load_sealing_library()
    return {"sealing": chosen, "sealing_libraries_loaded": dict(aead.versions),
            "gf256": fec.implementation(), "gf256_available": fec.available_multiplies()}


def median(values: list) -> float | None:
    return statistics.median(values) if values and None not in values else None


def measure_size(kernel_binary: Path, replay_binary: Path, directory: Path, size: int, volume: int, rounds: int,
                 source: list[bytes], failures: list) -> dict:
    frames = volume // FRAME_BYTES
    kernel = baseline(kernel_binary, size, min(volume, 256 << 20) // size)["bytes_per_second"]
    pace = 0.8 * kernel
    captures = {name: capture(replay_binary, directory / f"{index}-{size}.datagrams", size, name, frames,
                              0.5 * kernel, source)
                for index, name in enumerate(CONFIGURATIONS)}
    print(f"{size} B: sender side paced at {pace / 1e6:.0f} MB/s of datagrams (80 % of the C pair's lossless "
          f"{kernel / 1e6:.0f} MB/s); receiver side fed {max(CHUNK_BYTES // size, 16)} datagrams at a time",
          flush=True)
    runs = {side: {name: [] for name in (*CONFIGURATIONS, "C baseline")} for side in SIDES}
    for repetition in range(rounds):
        label = f"{size} B repetition {repetition + 1}"
        for name in CONFIGURATIONS:
            runs["sender"][name].append(until_lossless(
                lambda: sender_side(kernel_binary, size, name, frames, pace, source), failures,
                f"sender {name} {label}"))
            runs["receiver"][name].append(until_lossless(
                lambda: receiver_side(replay_binary, captures[name], size), failures, f"receiver {name} {label}"))
        runs["sender"]["C baseline"].append(until_lossless(
            lambda: kernel_sender(kernel_binary, size, volume, pace), failures, f"C sender {label}"))
        runs["receiver"]["C baseline"].append(until_lossless(
            lambda: kernel_receiver(replay_binary, captures["plain"], size), failures, f"C receiver {label}"))
        print(f"  repetition {repetition + 1}: " + "; ".join(
            f"{side} " + ", ".join(f"{name} {outcomes[-1]['cpu_per_gib']:.3f}" if outcomes[-1] else f"{name} INVALID"
                                   for name, outcomes in runs[side].items()) for side in SIDES), flush=True)
    for captured in captures.values():
        captured["path"].unlink()
    result = {"kernel_lossless_bytes_per_second": kernel, "sender_pace_bytes_per_second": pace,
              "receiver_chunk_datagrams": max(CHUNK_BYTES // size, 16), "runs": runs, "cpu_per_gib": {}, "ratios": {},
              "parity_share": {name: captured["parity"] / (captured["datagrams"] - captured["parity"])
                               for name, captured in captures.items()},
              "datagrams_per_gib": {name: captured["datagrams"] / (frames * FRAME_BYTES / GIB)
                                    for name, captured in captures.items()}}
    for side in SIDES:
        cpu = {name: [run["cpu_per_gib"] if run else None for run in outcomes]
               for name, outcomes in runs[side].items()}
        result["cpu_per_gib"][side] = {name: median(values) for name, values in cpu.items()}
        result.setdefault("system_share", {})[side] = {
            name: median([run["system_per_gib"] / run["cpu_per_gib"] if run else None for run in outcomes])
            for name, outcomes in runs[side].items()}
        result["ratios"][side] = {
            name: median([value / plain if value is not None and plain is not None else None
                          for value, plain in zip(cpu[name], cpu["plain"])])
            for name in ("sealed", "FEC 25 %", "sealed + FEC")}
    return result


def verdict(side: str, name: str, ratio: float | None) -> tuple[str, bool]:
    """The table cell for a ratio, and whether its gate (if it has one) passed."""
    limit = GATES.get((side, name))
    if ratio is None:
        return "INVALID", False
    if limit is None:
        return f"{ratio:.2f}", True
    return f"{ratio:.2f} {'PASS' if ratio <= limit else 'MISS'} (<= {limit})", ratio <= limit


def report(results: dict, table: GateTable) -> tuple[list[str], list[str]]:
    """Records every figure and gate in table; returns the markdown table's lines and one line per gate missed."""
    def shown(value):
        return f"{value:.3f}" if value is not None else "INVALID"

    lines = ["| side | datagram size | plain | sealed | FEC 25 % | sealed + FEC | C baseline | sealed / plain "
             "| FEC / plain | sealed + FEC / plain |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    misses = []
    for side in SIDES:
        for size, measured in results.items():
            cpu, ratios = measured["cpu_per_gib"][side], measured["ratios"][side]
            cells = [side, f"{size:,} B".replace(",", " ")]
            for name, value in cpu.items():
                cells.append(shown(value))
                table.record(f"{side} {size} B {name}", value if value is not None else 0.0,
                             "CPU per GiB, median" if value is not None else "INVALID: datagrams lost in every try",
                             value is not None, "s")
            for name, ratio in ratios.items():
                cell, passed = verdict(side, name, ratio)
                cells.append(cell)
                limit = GATES.get((side, name))
                table.record(f"{side} {size} B {name} / plain", ratio if ratio is not None else 0.0,
                             "INVALID: datagrams lost in every try" if ratio is None
                             else f"<= {limit}, median" if limit else "median, not gated", passed)
                if limit and not passed:
                    misses.append(f"MISS {side} {size} B {name} / plain: " + (
                        "INVALID (datagrams lost in every try)" if ratio is None else
                        f"{ratio:.2f} against <= {limit}: over by {ratio - limit:.2f} ({ratio / limit - 1:.0%} above)"))
            lines.append("| " + " | ".join(cells) + " |")
    return lines, misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 256 MiB (a smoke test)")
    parser.add_argument("--results", help="write every figure, gate and run to this JSON file")
    arguments = parser.parse_args()
    volume = (256 << 20) if arguments.quick else GIB
    rounds = 3 if arguments.quick else 5
    cpu = cpu_description()
    used = implementations()
    kernel_binary = compile_baseline()
    source = [os.urandom(FRAME_BYTES) for _ in range(SOURCE_FRAMES)]
    started = time.monotonic()
    print(f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores); flags: "
          + ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in cpu["flags"].items()))
    print(f"sealing: {used['sealing']} (loaded: {', '.join(used['sealing_libraries_loaded'].values())}); "
          f"GF(256) multiply: {used['gf256']} (available: {', '.join(used['gf256_available'])})", flush=True)
    failures, results = [], {}
    with tempfile.TemporaryDirectory(prefix="ddc-per-side-") as directory:
        replay_binary = compile_replay(Path(directory))
        for size in SIZES:
            results[size] = measure_size(kernel_binary, replay_binary, Path(directory), size, volume, rounds,
                                         source, failures)
    table = GateTable()
    lines, misses = report(results, table)
    exit_code = 0 if all(figure["passed"] for figure in table.figures) else 1
    if arguments.results:
        table.finish(arguments.results, arguments.quick)
        written = json.loads(Path(arguments.results).read_text())
        written.update({"cpu": cpu, "implementations": used, "volume_bytes": volume, "repetitions": rounds,
                        "frame_bytes": FRAME_BYTES, "fec": dict(zip(("data", "parity", "interleave"), FEC_25)),
                        "lossy_runs": failures, "sizes": {str(size): measured for size, measured in results.items()}})
        Path(arguments.results).write_text(json.dumps(written, indent=2))
    print(f"\nCPU seconds per GiB of frames (C baseline: per GiB of datagrams), user + system, median of {rounds}; "
          f"ratios: median of the {rounds} repetitions' ratios. {volume >> 20} MiB of 1 MiB frames per run, "
          f"{time.monotonic() - started:.0f} s in all.\n")
    print("\n".join(lines))
    print("\nsystem time (the kernel's part), plain/sealed/FEC/sealed + FEC/C baseline: " + "; ".join(
        f"{side} {size} B " + "/".join(f"{share:.0%}" if share is not None else "-"
                                       for share in measured["system_share"][side].values())
        for side in SIDES for size, measured in results.items()))
    print("FEC parity sent per data datagram: " + "; ".join(
        f"{size} B {measured['parity_share']['FEC 25 %']:.0%}" for size, measured in results.items()))
    print("sender side paced at: " + "; ".join(f"{size} B {measured['sender_pace_bytes_per_second'] / 1e6:.0f} MB/s"
                                                for size, measured in results.items()))
    if failures:
        print(f"{len(failures)} lossy runs were discarded and run again (see the JSON file)")
    print("\n".join(["", *misses]) if misses else "\nevery gate passed")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())

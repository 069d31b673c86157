"""`ddc send` and `ddc receive`: a directory link without a config file, with progress on the terminal.

The two commands build the same settings a config file would (a directory source with `once`, a directory
sink), run them under the supervisor in this process, and show progress while they run: rich's bars per file
and overall on a terminal, a plain line every few seconds otherwise (a log, a CI job). The end is a summary of
files, bytes, time and losses; `ddc receive` exits 1 when any file was not delivered.
"""

import sys
import threading
import time

from ddc.config import ConfigError, settings_from_mapping
from ddc.units import format_size, parse_size

LINK = "transfer"
PLAIN_EVERY_SECONDS = 2.0
REFRESH_SECONDS = 0.2
EXIT_LOSSES = 1
SEND_BUFFER_BYTES = 8 << 20
FRAME_ROOM = 8192  # a chunk's description beside its bytes: a frame per chunk, which is what one loss can cost


def _transport(arguments, address_key: str, address: str) -> dict:
    transport = {address_key: address}
    if arguments.key:
        transport["key"] = {"id": 1, "file": arguments.key}
    return transport


def _chunk_bytes(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise ConfigError(f"ddc send: --chunk-size: {error}") from None


def send_settings(arguments):
    chunk_bytes = _chunk_bytes(arguments.chunk_size)
    transport = _transport(arguments, "destination", arguments.to)
    transport.update(rate=arguments.rate, datagram_size=arguments.datagram_size, fec=arguments.fec,
                     batch_max_bytes=chunk_bytes + FRAME_ROOM)
    source = {"type": "directory", "path": arguments.paths, "once": True, "stable_after": 0,
              "chunk_size": chunk_bytes, "resend": arguments.resend, "resend_delay": arguments.resend_delay}
    # A small buffer: what the link has not sent yet is read ahead at most this far, so that the progress shown
    # is what left, and a stop (Ctrl-C) sends what was read within seconds.
    buffer = {"size": max(4 * (chunk_bytes + FRAME_ROOM), SEND_BUFFER_BYTES)}
    return settings_from_mapping({"role": "ingress", "links": {LINK: {"source": source, "transport": transport,
                                                                      "buffer": buffer}}}, "ddc send")


def receive_settings(arguments):
    transport = _transport(arguments, "listen", arguments.listen)
    transport["receive_buffer"] = arguments.receive_buffer
    sink = {"type": "directory", "path": arguments.directory, "stop_after_sender_shutdown": arguments.once,
            "existing": arguments.existing, "quarantine_directory": arguments.quarantine, "fsync": arguments.fsync}
    # Frames wait here while the sink writes: a tree of small files arrives faster than files are made.
    buffer = {"size": arguments.buffer}
    return settings_from_mapping({"role": "egress", "links": {LINK: {"transport": transport, "sink": sink,
                                                                     "buffer": buffer}}}, "ddc receive")


class Progress:
    """Polls a handler's progress() while the link runs; draws bars on a terminal, lines elsewhere."""

    def __init__(self, verb: str, read, stream=sys.stderr):
        self.verb = verb
        self.read = read
        self.stream = stream
        self.live = None
        self.bars: dict = {}
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ddc-progress", daemon=True)

    def start(self) -> None:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bars, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self.live = Bars(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=Console(file=self.stream),
                             transient=False)
            self.live.start()
            self.overall = self.live.add_task(f"[bold]{self.verb}", total=None)
        self.thread.start()

    def _run(self) -> None:
        next_line = time.monotonic() + PLAIN_EVERY_SECONDS
        while not self.stopped.wait(REFRESH_SECONDS):
            state = self.read()
            if state is None:
                continue
            if self.live is not None:
                self._draw(state)
            elif time.monotonic() >= next_line:
                next_line += PLAIN_EVERY_SECONDS
                self.stream.write(self._line(state) + "\n")
                self.stream.flush()

    def _draw(self, state: dict) -> None:
        done_files, done_bytes = state["files"], state["bytes"]
        in_progress = sum(received for _, received, _ in state["active"])
        total = state.get("bytes_total")
        counted = "" if done_files is None else (
            f" {done_files}{'/' + str(state['files_total']) if state.get('files_total') else ''} files")
        self.live.update(self.overall, completed=done_bytes + in_progress, total=total,
                         description=f"[bold]{self.verb}{counted}")
        names = set()
        for name, received, size in state["active"]:
            names.add(name)
            if name not in self.bars:
                self.bars[name] = self.live.add_task(name if len(name) <= 40 else "…" + name[-39:], total=size)
            self.live.update(self.bars[name], completed=received)
        for name in list(self.bars):
            if name not in names:
                self.live.remove_task(self.bars.pop(name))

    def _line(self, state: dict) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        total = f" of {state['files_total']}" if state.get("files_total") else ""
        return (f"ddc: {self.verb} {state['files']}{total} files, {format_size(state['bytes'])} in {elapsed:.0f} s "
                f"({format_size(state['bytes'] / elapsed)}/s), {len(state['active'])} in progress")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        if self.live is not None:
            state = self.read()
            if state is not None:
                self._draw(state)
            self.live.stop()


def supervise(settings, verb: str, handler_of, log_level: str = "warning", log_format: str = "text"):
    """Runs the settings' links until they finish or a signal stops them, with progress from the handler that
    handler_of picks from the links: (exit code, links, seconds)."""
    from ddc import supervisor as supervision
    from ddc.telemetry.logs import configure_logging

    links = supervision.build_links(settings)
    handler = handler_of(links)
    progress = Progress(verb, lambda: _state(handler))
    progress.start()  # first: log lines then go through the live display, not across it
    try:
        configure_logging(log_level, log_format, stream=sys.stderr, syslog=settings.telemetry.syslog)
    except OSError as error:
        progress.stop()
        print(f"ddc: cannot start logging: {error}", file=sys.stderr)
        return 1, links, 0.0
    supervisor = supervision.Supervisor(links, settings.telemetry)
    supervision.install_signal_handlers(supervisor)
    started = time.monotonic()
    try:
        code = supervisor.run_until_stopped()
    finally:
        progress.stop()
    return code, links, time.monotonic() - started


def _run(settings, verb: str, handler_of, summarize) -> int:
    code, links, elapsed = supervise(settings, verb, lambda links: handler_of(links[0]))
    if _state(handler_of(links[0])) is None:  # it never opened: the reason is logged, there is nothing to sum up
        return code or 1
    summary, losses = summarize(handler_of(links[0]), links[0].counters(), elapsed)
    print(f"ddc: {summary}", file=sys.stderr)
    return code or (EXIT_LOSSES if losses else 0)


def standard_stream_handler(links):
    """The handler of a byte-stream link reading stdin or writing stdout, whose progress `ddc run` shows on a
    terminal; None if there is none."""
    for link in links:
        handler = getattr(link, "source", None) or getattr(link, "sink", None)
        if getattr(handler.config, "type", None) == "file" and handler.config.path == "-":
            return handler
    return None


def _state(handler) -> dict | None:
    try:
        return handler.progress()
    except AttributeError:  # not opened yet
        return None


def send(arguments) -> int:
    settings = send_settings(arguments)

    def summarize(source, _, elapsed):
        counters = source.counters()
        skipped = sum(value for key, value in counters.items() if key.startswith("directory_files_skipped_"))
        unsent = max(source.files_found - source.files_sent, 0)
        return (f"sent {source.files_sent} files, {format_size(source.bytes_sent)} in {elapsed:.1f} s "
                f"({format_size(source.bytes_sent / max(elapsed, 1e-9))}/s)"
                f"{f', {skipped} skipped (see above)' if skipped else ''}"
                f"{f'; {unsent} files NOT sent (stopped before)' if unsent else ''}", skipped + unsent)

    return _run(settings, "sent", lambda link: link.source, summarize)


def receive(arguments) -> int:
    settings = receive_settings(arguments)

    def summarize(sink, counters, elapsed):
        lost = sink.files_interrupted + sum(
            value for key, value in counters.items()
            if key.startswith(("directory_files_quarantined_", "directory_files_refused_")))
        frames_lost = counters.get("frames_lost", 0)
        duplicates = counters["directory_files_duplicate"]
        outcome = f"{lost} files NOT delivered (see above)" if lost else "nothing lost"
        if frames_lost and not lost:
            outcome = f"{frames_lost} frames lost in transit, with files this receiver cannot name"
        return (f"received {sink.files_delivered} files, {format_size(sink.bytes_delivered)} in {elapsed:.1f} s"
                f"{f', {duplicates} duplicate copies dropped' if duplicates else ''}; {outcome}",
                lost or frames_lost)

    return _run(settings, "received", lambda link: link.sink, summarize)

"""The `ddc` command: run, send, receive, check, keygen, status, doctor, repair, demo, diode-sim, version.

Exit codes: 0 success, 1 a runtime failure (a link failed, a port could not be
bound), 2 a usage or configuration error. Errors are one line each on stderr,
never a traceback.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import ddc
from ddc.config import ConfigError, load_settings, resolved_view

EXIT_USAGE = 2


def _is_compiled(module: str) -> bool:
    """Whether a module is one of DDC's compiled ones (the core, or a handler's loops): its .pyx lies beside."""
    if module.startswith("ddc._core"):
        return True
    parts = module.split(".")
    return parts[0] == "ddc" and Path(ddc.__file__).parent.joinpath(*parts[1:]).with_suffix(".pyx").is_file()


def _core_missing(error: ImportError) -> int:
    print(f"ddc: the compiled core is missing ({error}); reinstall with `pip install .` "
          "on a machine with gcc and the Python headers", file=sys.stderr)
    return 1


def command_run(arguments) -> int:
    settings = load_settings(arguments.file)
    from ddc.telemetry.logs import configure_logging
    try:
        configure_logging(settings.telemetry.log_level, settings.telemetry.log_format,
                          syslog=settings.telemetry.syslog)
    except OSError as error:
        print(f"ddc: cannot start logging: {error}", file=sys.stderr)
        return 1
    from ddc import supervisor
    # A fatal signal would end the process without a word: Python's faulthandler writes "Fatal Python error:
    # Segmentation fault" and every thread's stack to stderr first. (Not for librdkafka's threads: they block
    # signals, so the kernel ends the process at once; docs/kafka.md.)
    import faulthandler
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if sys.stderr.isatty() and _has_standard_stream(settings):
        from ddc import transfer  # a stream on stdin or stdout, watched from a terminal: a progress bar
        code, _, _ = transfer.supervise(settings, "read" if settings.role == "ingress" else "written",
                                        transfer.standard_stream_handler, settings.telemetry.log_level,
                                        settings.telemetry.log_format)
        return code
    return supervisor.run(settings)


def _has_standard_stream(settings) -> bool:
    return any(getattr(handler, "type", None) == "file" and handler.path == "-"
               for link in settings.links.values() for handler in (getattr(link, "source", None),
                                                                   getattr(link, "sink", None)))


def command_check(arguments) -> int:
    settings = load_settings(arguments.file)
    from ddc.crypto import check_keys
    check_keys(settings)
    print(json.dumps(resolved_view(settings), indent=2))
    print(f"ddc: {arguments.file} is valid ({settings.role}, {len(settings.links)} link(s))", file=sys.stderr)
    return 0


def command_keygen(arguments) -> int:
    from ddc.crypto import write_new_key
    path = write_new_key(arguments.path)
    print(f"ddc: wrote a new 256-bit key to {path} (mode 600); copy it to both sides of the link over a "
          "trusted channel, never across the diode", file=sys.stderr)
    return 0


def command_status(arguments) -> int:
    from ddc import status
    try:
        print(status.render(status.fetch(arguments.url)))
    except status.StatusError as error:
        print(f"ddc: {error}", file=sys.stderr)
        return 1
    return 0


def command_doctor(arguments) -> int:
    from ddc import doctor
    settings = load_settings(arguments.file) if arguments.file else None
    findings = doctor.diagnose(settings)
    for finding in findings:
        print(finding)
    problems = sum(not finding.ok for finding in findings)
    print(f"{problems} problem(s) found" if problems else "no problems found")
    return 1 if problems else 0


def command_repair(arguments) -> int:
    settings = load_settings(arguments.file)
    from ddc.handlers.kafka.repair import RepairError, repair
    from ddc.units import parse_duration
    try:
        timeout = parse_duration(arguments.timeout)
    except ValueError as error:
        print(f"ddc repair: --timeout: {error}", file=sys.stderr)
        return EXIT_USAGE
    opened = []
    try:
        for name in arguments.reports:
            try:
                opened.append(sys.stdin if name == "-" else open(name, "rb"))
            except OSError as error:
                raise RepairError(f"cannot read report {name}: {error.strerror}", usage=True) from None
        files = [(name, _text_lines(file)) for name, file in zip(arguments.reports, opened)]
        repair(settings, files, arguments.link, arguments.report_link, arguments.dry_run, print, timeout,
               arguments.force)
    except RepairError as error:
        print(f"ddc repair: {error}", file=sys.stderr)
        return EXIT_USAGE if error.usage else 1
    finally:
        for file in opened:
            if file is not sys.stdin:
                file.close()
    return 0


def _text_lines(file, longest: int = 1 << 20):
    """Lines read one at a time (a report file may be a whole log), undecodable bytes replaced, stdin too; a line
    longer than any report (such as /dev/zero's) ends the reading with an error."""
    from ddc.handlers.kafka.repair import RepairError
    source = sys.stdin.buffer if file is sys.stdin else file
    name = "standard input" if file is sys.stdin else file.name
    try:
        while line := source.readline(longest):
            if len(line) == longest and not line.endswith(b"\n"):
                raise RepairError(f"{name}: a line longer than {longest} bytes: not a file of reports or log lines",
                                  usage=True)
            yield line.decode("utf-8", "replace")
    except OSError as error:
        raise RepairError(f"cannot read report {name}: {error.strerror}", usage=True) from None


def command_send(arguments) -> int:
    from ddc import transfer
    return transfer.send(arguments)


def command_receive(arguments) -> int:
    from ddc import transfer
    return transfer.receive(arguments)


def command_version(arguments) -> int:
    from ddc._core import wire
    print(f"ddc {ddc.__version__} (wire protocol v{wire.PROTOCOL_VERSION}, Python {platform.python_version()}, "
          f"{platform.machine()})")
    return 0


def command_demo(arguments) -> int:
    from ddc import demo
    try:
        demo.check_options(arguments.rate, arguments.link_rate, arguments.loss, arguments.burst_rate, arguments.fec)
    except (ConfigError, ValueError) as error:
        print(f"ddc demo: {error}", file=sys.stderr)
        return EXIT_USAGE
    return demo.run_demo(seconds=arguments.seconds, offered_rate=arguments.rate, link_rate=arguments.link_rate,
                         verbose=arguments.verbose, loss=arguments.loss, burst_rate=arguments.burst_rate,
                         fec=arguments.fec)


def command_diode_sim(arguments) -> int:
    import signal

    from ddc.config import parse_endpoint
    from ddc.diode_sim import Impairments, run_forever
    from ddc.units import parse_duration, parse_probability, parse_rate, parse_size
    try:
        listen, forward = parse_endpoint(arguments.listen), parse_endpoint(arguments.forward)
        impairments = Impairments(
            loss=parse_probability(arguments.loss), burst_rate=parse_probability(arguments.burst_rate),
            burst_length=arguments.burst_length, gilbert_enter=parse_probability(arguments.gilbert_enter),
            gilbert_leave=parse_probability(arguments.gilbert_leave), reorder=parse_probability(arguments.reorder),
            reorder_depth=arguments.reorder_depth,
            reorder_delay=parse_duration(arguments.reorder_delay), duplicate=parse_probability(arguments.duplicate),
            corrupt=parse_probability(arguments.corrupt), rate=parse_rate(arguments.rate),
            queue_bytes=parse_size(arguments.queue), latency=parse_duration(arguments.latency), seed=arguments.seed)
        report_every = parse_duration(arguments.report_every)
    except ValueError as error:
        print(f"ddc diode-sim: {error}", file=sys.stderr)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run_forever((listen.host, listen.port), (forward.host, forward.port), impairments, report_every,
                           sys.stdout)
    except OSError as error:
        print(f"ddc diode-sim: cannot relay {arguments.listen} -> {arguments.forward}: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddc", description="Data Diode Connector: data across a one-way link.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every link of a proxy until SIGTERM or SIGINT")
    run.add_argument("file", help="the proxy's TOML config file")
    run.set_defaults(handler=command_run)

    send = commands.add_parser(
        "send", help="send files and folders across the diode to a `ddc receive` (no config file)",
        description="Sends each PATH (a file, or a folder with everything in it) under its own name, with its "
                    "mode and modification time and a SHA-256 the receiver checks, then stops.")
    send.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to send")
    send.add_argument("--to", required=True, metavar="HOST:PORT", help="where the receiver listens (the diode)")
    send.add_argument("--rate", default="1Gbit/s", help="the link's pacing rate (default 1Gbit/s)")
    send.add_argument("--fec", default="off", help="forward error correction, such as 25%% (default off)")
    send.add_argument("--key", metavar="FILE", help="a key file from `ddc keygen`, the same on both sides")
    send.add_argument("--datagram-size", type=int, default=1472,
                      help="bytes per datagram (default 1472; 8972 for jumbo frames, 65507 on loopback)")
    send.add_argument("--chunk-size", default="1MiB",
                      help="bytes of a file per record (default 1MiB); smaller loses less per lost frame without FEC")
    send.add_argument("--resend", type=int, default=0, metavar="N",
                      help="send every file N more times, for a receiver that may miss the first (default 0)")
    send.add_argument("--resend-delay", default="0s", help="the pause before each extra copy (default 0s)")
    send.set_defaults(handler=command_send)

    receive = commands.add_parser(
        "receive", help="receive what `ddc send` sends into a folder (no config file)",
        description="Writes each file whole, checked, and renamed into place; a file that cannot be completed "
                    "is reported by name and never appears under it. Exits 1 if any file was not delivered.")
    receive.add_argument("directory", metavar="DIR", help="the folder to write into (made if missing)")
    receive.add_argument("--listen", required=True, metavar="HOST:PORT", help="where to receive the datagrams")
    receive.add_argument("--once", action="store_true", help="exit once the sender has finished")
    receive.add_argument("--key", metavar="FILE", help="the key file the sender uses")
    receive.add_argument("--existing", choices=("overwrite", "keep_both", "refuse"), default="overwrite",
                         help="what to do with a file whose name exists (default overwrite)")
    receive.add_argument("--quarantine", metavar="FOLDER", help="keep files that could not be completed here")
    receive.add_argument("--fsync", action="store_true",
                         help="sync every file to disk before renaming it into place, so that a power cut never "
                              "leaves a file under its name whose bytes were not written (slower on disks)")
    receive.add_argument("--buffer", default="512MiB",
                         help="memory for frames waiting to be written (default 512MiB, used only while the disk "
                              "lags behind the link)")
    receive.add_argument("--receive-buffer", default="64MiB", help="the socket's receive buffer (default 64MiB)")
    receive.set_defaults(handler=command_receive)

    check = commands.add_parser("check", help="validate a config file and print it resolved, secrets masked")
    check.add_argument("file", help="the proxy's TOML config file")
    check.set_defaults(handler=command_check)

    keygen = commands.add_parser("keygen", help="write a new random link key file (base64, mode 600)")
    keygen.add_argument("path", help="where to write the key; an existing file is never overwritten")
    keygen.set_defaults(handler=command_keygen)

    demo = commands.add_parser("demo", help="run an ingress and an egress on loopback with generated traffic")
    demo.add_argument("--seconds", type=float, default=10.0, help="how long to generate traffic (default 10)")
    demo.add_argument("--rate", default="200Mbit/s", help="offered load of the generator (default 200Mbit/s)")
    demo.add_argument("--link-rate", default="1Gbit/s", help="pacing rate of the link (default 1Gbit/s)")
    demo.add_argument("--loss", default="0", help="run the link through diode-sim losing this share of datagrams, "
                                                  "such as 5%% (default 0: no diode-sim)")
    demo.add_argument("--burst-rate", default="0", help="diode-sim: chance per datagram that 10 in a row are lost")
    demo.add_argument("--fec", default="off", help="forward error correction on the link, such as 25%% (default off)")
    demo.add_argument("--verbose", action="store_true", help="show the proxies' own log lines")
    demo.set_defaults(handler=command_demo)

    simulator = commands.add_parser(
        "diode-sim", help="relay UDP from LISTEN to FORWARD through a lossy, seeded hostile link (for testing)",
        description="Put this between an ingress's destination and its egress's listen address. "
                    "Probabilities are percentages (\"5%%\") or fractions (0.05). Counters are printed as JSON lines.")
    simulator.add_argument("listen", help="host:port to receive the ingress's datagrams on")
    simulator.add_argument("forward", help="host:port of the egress")
    simulator.add_argument("--loss", default="0", help="independent loss per datagram")
    simulator.add_argument("--burst-rate", default="0", help="chance per datagram that a burst of losses starts")
    simulator.add_argument("--burst-length", type=int, default=10, help="datagrams lost per burst (default 10)")
    simulator.add_argument("--gilbert-enter", default="0", help="Gilbert-Elliott: chance to enter the losing state")
    simulator.add_argument("--gilbert-leave", default="1", help="Gilbert-Elliott: chance to leave it (default 1)")
    simulator.add_argument("--reorder", default="0", help="chance a datagram is held back")
    simulator.add_argument("--reorder-depth", type=int, default=8, help="datagrams a held one waits (default 8)")
    simulator.add_argument("--reorder-delay", default="5ms",
                           help="the longest a held datagram waits when fewer datagrams follow it (default 5ms)")
    simulator.add_argument("--duplicate", default="0", help="chance a datagram is sent twice")
    simulator.add_argument("--corrupt", default="0", help="chance one bit of a datagram is flipped")
    simulator.add_argument("--rate", default="unlimited", help="bandwidth cap, such as 100Mbit/s (default unlimited)")
    simulator.add_argument("--queue", default="4MiB", help="bytes the capped link holds before dropping (default 4MiB)")
    simulator.add_argument("--latency", default="0", help="delay added to every datagram, such as 20ms")
    simulator.add_argument("--seed", type=int, default=1, help="random seed, for repeatable runs (default 1)")
    simulator.add_argument("--report-every", default="5s", help="how often to print the counters (default 5s)")
    simulator.set_defaults(handler=command_diode_sim)

    status = commands.add_parser("status", help="show the live state of a running proxy")
    status.add_argument("url", nargs="?", default="http://127.0.0.1:9180",
                        help="the proxy's [telemetry.http] address (default http://127.0.0.1:9180)")
    status.set_defaults(handler=command_status)

    doctor = commands.add_parser("doctor", help="check this machine against a config and print fixes")
    doctor.add_argument("file", nargs="?", help="the proxy's TOML config file (general checks without it)")
    doctor.set_defaults(handler=command_doctor)

    repair = commands.add_parser(
        "repair", help="rewind an ingress's consumer group to resend what the egress reported missing",
        description="Reads the egress's missing-range reports (the JSON records of missing_records_topic, or its "
                    "log lines), checks them against the ingress's config and the source cluster, and rewinds each "
                    "affected partition of the stopped ingress's consumer group to its first missing offset.")
    repair.add_argument("file", help="the ingress's TOML config file")
    repair.add_argument("reports", nargs="+", metavar="REPORT", help="files of reports ('-': standard input)")
    repair.add_argument("--link", help="the ingress link to repair (default: the config's only Kafka link)")
    repair.add_argument("--report-link", help="the link name the reports carry, if the egress names it otherwise")
    repair.add_argument("--dry-run", action="store_true", help="show the plan and change nothing")
    repair.add_argument("--timeout", default="30s", help="how long to wait for the source cluster (default 30s)")
    repair.add_argument("--force", action="store_true",
                        help="set the offsets even if the group has none for any reported partition, or the "
                             "reports go beyond the end the cluster states")
    repair.set_defaults(handler=command_repair)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=command_version)
    return parser


def main(argv=None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.handler(arguments)
    except ConfigError as error:
        print(f"ddc: {error}".replace("\n", "\nddc: "), file=sys.stderr)
        return EXIT_USAGE
    except ImportError as error:
        if _is_compiled(error.name or ""):
            return _core_missing(error)
        raise
    except KeyboardInterrupt:
        return 130

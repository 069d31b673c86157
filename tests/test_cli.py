import re
import socket

from conftest import free_udp_port, run_ddc as ddc


def test_version():
    result = ddc("version")
    assert result.returncode == 0
    assert re.fullmatch(r"ddc \S+ \(wire protocol v2, Python 3\.\d+\.\d+, \w+\)\n", result.stdout), result.stdout


def test_usage_errors_exit_2():
    assert ddc().returncode == 2
    assert ddc("fly").returncode == 2


def test_demo_moves_traffic_end_to_end_and_accounts_for_every_stage():
    result = ddc("demo", "--seconds", "2", "--rate", "50Mbit/s")
    assert result.returncode == 0, result.stdout + result.stderr
    generated = int(re.search(r"generated +(\d+) datagrams", result.stdout).group(1))
    received = int(re.search(r"ingress source +received (\d+), kernel drops 0, buffer drops 0", result.stdout).group(1))
    rebuilt = int(re.search(r"egress sink +(\d+) records rebuilt, buffer drops 0, sent (\d+)", result.stdout).group(1))
    delivered = int(re.search(r"collector +delivered (\d+), missing 0, corrupted 0, duplicated 0", result.stdout)
                    .group(1))
    assert generated == received == rebuilt == delivered > 1000
    assert re.search(r"link .* lost 0, kernel drops 0", result.stdout)
    assert "Traceback" not in result.stdout + result.stderr


def test_demo_through_a_lossy_link_shows_fec_repairing_it():
    # 2 %: at 5 % a block of ~30 data datagrams loses more than its 8 parity about once in 10 000 (a few per
    # cent of runs), which the demo would rightly count as missing.
    result = ddc("demo", "--seconds", "2", "--rate", "50Mbit/s", "--loss", "2%", "--fec", "25%")
    assert result.returncode == 0, result.stdout + result.stderr
    relayed, dropped = map(int, re.search(r"diode-sim +received (\d+), dropped (\d+)", result.stdout).groups())
    rebuilt, unrecoverable = map(int, re.search(r"FEC +(\d+) datagrams rebuilt .* (\d+) blocks beyond repair",
                                                result.stdout).groups())
    assert 0.01 * relayed < dropped < 0.03 * relayed
    assert 0 < rebuilt <= dropped and unrecoverable == 0
    assert re.search(r"collector +delivered \d+, missing 0, corrupted 0, duplicated 0", result.stdout)


def test_demo_without_fec_counts_what_the_lossy_link_lost():
    result = ddc("demo", "--seconds", "2", "--rate", "50Mbit/s", "--loss", "2%")
    assert result.returncode == 1, result.stdout + result.stderr
    dropped = int(re.search(r"diode-sim +received \d+, dropped (\d+)", result.stdout).group(1))
    lost = int(re.search(r"egress received \d+, lost (\d+)", result.stdout).group(1))
    missing = int(re.search(r"collector +delivered \d+, missing (\d+)", result.stdout).group(1))
    assert lost == dropped > 0 and missing > 0
    assert "FEC off" in result.stdout and not re.search(r"^ +FEC ", result.stdout, re.MULTILINE)
    assert "Traceback" not in result.stdout + result.stderr


def test_demo_options_are_checked_before_anything_starts():
    result = ddc("demo", "--fec", "300%")
    assert result.returncode == 2 and "links.demo.transport.fec" in result.stderr and "300%" in result.stderr
    result = ddc("demo", "--loss", "2")
    assert result.returncode == 2 and "'2' is not between 0% and 100%" in result.stderr


def test_a_port_in_use_is_a_clear_configuration_error(tmp_path):
    """Exit 2, as for any configuration the operator must change (issue #22); 1 means the proxy failed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = tmp_path / "egress.toml"
        config.write_text(f"""
role = "egress"
[telemetry]
log_format = "json"
[links.logs.transport]
listen = "127.0.0.1:{port}"
[links.logs.sink]
type = "udp"
target = "127.0.0.1:{free_udp_port()}"
""")
        result = ddc("run", str(config), timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def udp_ingress(tmp_path, destination: str, tables: str = ""):
    """A UDP ingress's config file, sending to destination; tables go before the link's."""
    config = tmp_path / "ingress.toml"
    config.write_text(f"""
role = "ingress"
{tables}
[links.logs.source]
type = "udp"
listen = "127.0.0.1:{free_udp_port()}"
[links.logs.transport]
destination = "{destination}"
""")
    return config


def test_a_name_that_does_not_resolve_is_a_failure_to_retry_not_a_configuration_error(tmp_path):
    """At boot the resolver may not be up yet: exit 1, which a service manager restarts; exit 2 (a port held by
    another process) it does not (deploy/systemd/ddc@.service, RestartPreventExitStatus=2)."""
    config = udp_ingress(tmp_path, "egress-host.invalid:7001")
    result = ddc("run", str(config), timeout=60)
    assert result.returncode == 1, result.stderr
    assert "cannot resolve egress-host.invalid:7001" in result.stderr and "Traceback" not in result.stderr


def test_an_unresolvable_syslog_target_is_a_clear_runtime_error(tmp_path):
    config = udp_ingress(tmp_path, f"127.0.0.1:{free_udp_port()}",
                         '[telemetry.syslog]\ntarget = "no-such-host.invalid:514"')
    result = ddc("run", str(config), timeout=30)
    assert result.returncode == 1
    assert "cannot start logging: cannot resolve no-such-host.invalid:514" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_fatal_signal_leaves_its_name_and_every_threads_stack_in_the_log(start_ddc):
    """Issue #21: a process that dies of a fatal signal must say so. A segmentation fault in a thread that takes
    signals (every Python thread, the core's code) now names itself, with each thread's stack, before the end.
    librdkafka's own threads block signals, so its crashes bypass any handler: docs/kafka.md says where their
    trace is (the service manager, the kernel log)."""
    import signal

    egress = start_ddc("egress", f"""
role = "egress"
[telemetry]
log_format = "json"
[links.logs.transport]
listen = "127.0.0.1:{free_udp_port()}"
[links.logs.sink]
type = "udp"
target = "127.0.0.1:{free_udp_port()}"
""")
    egress.wait_until_ready()
    egress.process.send_signal(signal.SIGSEGV)
    assert egress.process.wait(30) == -signal.SIGSEGV
    log = egress.log_path.read_text()
    assert "Fatal Python error: Segmentation fault" in log
    assert "ddc-egress-logs-receive" in log or "_receive_loop" in log, log[-3000:]


def test_without_the_compiled_core_the_config_loads_and_ddc_says_what_is_missing(tmp_path):
    """A source tree never built, or a wheel for another Python: the config still loads, and every command
    that needs the core says so in one line instead of a traceback."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "ddc", tmp_path / "ddc", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}

    def run(*arguments):
        return subprocess.run([sys.executable, *arguments], cwd=tmp_path, env=environment, capture_output=True,
                              text=True, timeout=60)

    loaded = run("-c", "import ddc.config, ddc.handlers.kafka.config; print(sorted(ddc.config.__all__)[0])")
    assert loaded.returncode == 0 and loaded.stdout.strip() == "ConfigError", loaded.stderr
    assert run("-c", "import ddc._core.wire").returncode == 1, "the copy must really lack the core"
    for command in (["check", str(root / "examples" / "ingress.toml")], ["run", str(root / "examples" / "egress.toml")],
                    ["version"], ["demo", "--seconds", "1"]):
        result = run("-m", "ddc", *command)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith("ddc: the compiled core is missing"), (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_missing_handler_extension_is_named_like_a_missing_core(tmp_path):
    """The UDP and Kafka handlers' compiled loops live beside their Python (ddc/handlers/*/): a build without them
    says so in one line, as for the core."""
    import subprocess
    import sys
    from pathlib import Path

    block_and_run = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == sys.argv[1]:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ddc.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n")
    config = tmp_path / "egress.toml"
    config.write_text(f'role = "egress"\n[links.a.sink]\ntype = "udp"\ntarget = "127.0.0.1:9"\n'
                      f'[links.a.transport]\nlisten = "127.0.0.1:{free_udp_port()}"\n')
    done = subprocess.run([sys.executable, "-c", block_and_run, "ddc.handlers.udp.datagrams", "run", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 1 and done.stderr.startswith("ddc: the compiled core is missing"), done.stderr[-800:]
    assert "Traceback" not in done.stderr

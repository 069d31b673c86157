import re
import socket
import subprocess
import sys

from conftest import free_udp_port


def ddc(*arguments, timeout=120):
    return subprocess.run([sys.executable, "-m", "ddc", *arguments], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_version():
    result = ddc("version")
    assert result.returncode == 0
    assert re.fullmatch(r"ddc \S+ \(wire protocol v2, Python 3\.\d+\.\d+, \w+\)\n", result.stdout), result.stdout


def test_usage_errors_exit_2():
    assert ddc().returncode == 2
    assert ddc("fly").returncode == 2


def test_demo_moves_traffic_end_to_end_and_reports_it():
    result = ddc("demo", "--seconds", "2", "--rate", "50Mbit/s")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    match = re.search(r"sent (\d+) datagrams .* delivered (\d+), missing 0, corrupted 0, duplicated 0", summary)
    assert match, summary
    assert int(match.group(1)) == int(match.group(2)) > 1000
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_runtime_error(tmp_path):
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
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr

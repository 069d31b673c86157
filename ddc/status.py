"""`ddc status [URL]`: the live state of a running proxy, read from its /status endpoint."""

import json
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9180"

COLUMNS = ("LINK", "ROLE", "STATE", "IN/s", "OUT/s", "LINK B/s", "LOST DGRAMS", "LOST FRAMES", "BUFFER",
           "HEARTBEAT AGE")


class StatusError(Exception):
    pass


def fetch(url: str) -> dict:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    if not url.endswith("/status"):
        url += "/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StatusError(f"{url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StatusError(f"cannot reach {url}: {reason}; is the proxy running with [telemetry.http] set?") from None
    except json.JSONDecodeError:
        raise StatusError(f"{url} did not answer with JSON; is it a DDC proxy?") from None


def _cell(value, suffix="") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else str(value)


def render(status: dict) -> str:
    rows = []
    for link in status.get("links", []):
        counters, rates = link.get("counters", {}), link.get("rates", {})
        rows.append((
            link["link"], link["role"], link["state"],
            _cell(rates.get("records_in_per_second")), _cell(rates.get("records_out_per_second")),
            _cell(rates.get("link_bytes_per_second")),
            _cell(counters.get("datagrams_lost")), _cell(counters.get("frames_lost")),
            f"{link.get('buffer_fill', 0) * 100:.1f}%",
            _cell(link.get("heartbeat_age_seconds"), " s") if link["role"] == "egress" else "-",
        ))
    widths = [max(len(str(row[i])) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = [f"ddc {status.get('version', '?')}, pid {status.get('pid', '?')}, up "
             f"{status.get('uptime_seconds', 0):.0f} s, {'ready' if status.get('ready') else 'NOT READY'}"]
    lines += ["  " + problem for problem in status.get("problems", [])]
    lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(COLUMNS, widths)).rstrip())
    for row in rows:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)

"""Human units in configuration: sizes ("64KiB"), durations ("250ms") and rates ("800Mbit/s").

Each parser accepts a bare number too (bytes, seconds, bytes per second) and
raises ValueError with the offending value and a correct example, which the
config loader turns into a one-line error.
"""

import re

_NUMBER = r"\s*([0-9]+(?:\.[0-9]+)?)\s*"

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30,
}

_DURATION_UNITS = {"": 1.0, "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

_RATE_BITS = {"bit/s": 1, "bps": 1, "kbit/s": 10**3, "kbps": 10**3, "mbit/s": 10**6, "mbps": 10**6,
              "gbit/s": 10**9, "gbps": 10**9}
_RATE_BYTES = {"b/s": 1, "kb/s": 10**3, "mb/s": 10**6, "gb/s": 10**9,
               "kib/s": 2**10, "mib/s": 2**20, "gib/s": 2**30}

UNLIMITED = 0.0


def _split(text, what, example):
    match = re.fullmatch(_NUMBER + r"([A-Za-zµ/]*)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a {what}; write a number with a unit, such as {example}")
    return float(match.group(1)), match.group(2)


def parse_size(value) -> int:
    """Bytes from 1048576, "1MiB", "64KiB" or "1.5GB" (KiB/MiB/GiB are powers of 2, KB/MB/GB of 10)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; write bytes or a number with a unit, such as \"64KiB\"")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        number, unit = _split(str(value), "size", '"64KiB", "8MiB" or "1GB"')
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{value!r} has an unknown size unit {unit!r}; use B, KiB, MiB, GiB, KB, MB or GB")
    if number < 0:
        raise ValueError(f"{value!r} is negative; a size must be zero or more")
    return int(number * factor)


def parse_duration(value) -> float:
    """Seconds from 5, 0.25, "250ms", "5s", "2m" or "1h"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write seconds or a number with a unit, such as \"250ms\"")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        number, unit = _split(str(value), "duration", '"250ms", "5s" or "2m"')
    factor = _DURATION_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{value!r} has an unknown duration unit {unit!r}; use ns, us, ms, s, m or h")
    return number * factor


def parse_rate(value) -> float:
    """Bytes per second from "800Mbit/s", "1Gbit/s", "100MB/s", a number of bytes/s, or "unlimited" (0)."""
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "none", "off"):
        return UNLIMITED
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a rate; write for example \"800Mbit/s\", \"100MB/s\" or \"unlimited\"")
    if isinstance(value, (int, float)):
        rate = float(value)
    else:
        number, unit = _split(str(value), "rate", '"800Mbit/s", "100MB/s" or "unlimited"')
        lowered = unit.lower()
        if lowered in _RATE_BITS:
            rate = number * _RATE_BITS[lowered] / 8
        elif lowered in _RATE_BYTES:
            rate = number * _RATE_BYTES[lowered]
        else:
            raise ValueError(
                f"{value!r} has an unknown rate unit {unit!r}; use bit/s, Mbit/s, Gbit/s, MB/s, MiB/s or \"unlimited\"")
    if rate <= 0:
        raise ValueError(f"{value!r} is not a positive rate; write \"unlimited\" to turn pacing off")
    return rate


def format_size(count: float) -> str:
    """Bytes as people read them: "812 B", "1.5 MiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def format_rate(bytes_per_second: float) -> str:
    if bytes_per_second == UNLIMITED:
        return "unlimited"
    bits = bytes_per_second * 8
    for unit, factor in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= factor:
            return f"{bits / factor:.1f} {unit}"
    return f"{bits:.0f} bit/s"


def parse_probability(value) -> float:
    """A probability from "5%", "0.1%" or a fraction such as 0.05."""
    text = str(value).strip()
    try:
        probability = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a probability; write a percentage such as \"5%\" or a fraction "
                         "such as 0.05") from None
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"{value!r} is not between 0% and 100%")
    return probability

"""The value types every config section shares: addresses, sizes, durations, rates and regular expressions,
each parsed from what an operator writes ("10ms", "64MiB", "[::1]:5000") with an error that names what is
allowed."""

import ipaddress
import re
from typing import Annotated, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from ddc.units import parse_duration, parse_rate, parse_size


class Endpoint(NamedTuple):
    host: str
    port: int

    def __str__(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(value) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([^:\[\]\s]+):([0-9]+)", text)
    if not match:
        raise ValueError(f"{text!r} is not an address; write host:port, such as \"127.0.0.1:5000\" or \"[::1]:5000\"")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if match.group(1):
        ipaddress.IPv6Address(host)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is out of range; use 1 to 65535")
    return Endpoint(host, port)


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_burst(value):
    """"auto" is None here, resolved from the rate by IngressTransportConfig.burst_bytes; else a size."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return parse_size(value)
    except ValueError as error:
        raise ValueError(f'{error}; or "auto" (10 ms of the rate)') from None


Burst = Annotated[int | None, BeforeValidator(parse_burst),
                  PlainSerializer(lambda value: "auto" if value is None else value)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
Address = Annotated[Endpoint, BeforeValidator(parse_endpoint), PlainSerializer(str)]


class Section(BaseModel):
    """Schemas are built at first validation (defer_build), so a proxy builds only its role's: 0.1 s of
    start-up, which is most of a short transfer's time (bench/pydiode_compare.py)."""
    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)




def regular_expression(what: str):
    """A validator for a regular expression the operator wrote; what names it in the error ("topic pattern")."""
    def compiles(pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{what} {pattern!r} is not a regular expression: {error}") from None
        return pattern
    return AfterValidator(compiles)


def name_or_pattern(what: str):
    """A name, or a regular expression where it starts with "^"."""
    check = regular_expression(what).func
    return AfterValidator(lambda name: check(name) if name.startswith("^") else name)

"""The telemetry section of a proxy's config: log level and format, the HTTP endpoint, StatsD and syslog."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ddc.config.values import Address, Duration, Section


class HttpConfig(Section):
    """Prometheus /metrics, /healthz, /readyz and /status; TLS, and client certificates, where they listen beyond
    loopback."""

    listen: Address
    certificate: Annotated[str, Field(min_length=1)] | None = None
    private_key: Annotated[str, Field(min_length=1)] | None = None
    client_ca: Annotated[str, Field(min_length=1)] | None = None
    max_connections: Annotated[int, Field(ge=1, le=1024)] = 16
    request_timeout: Annotated[Duration, Field(gt=0, le=300)] = "10s"

    @model_validator(mode="after")
    def tls_is_whole(self):
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: set both to serve HTTPS, or neither")
        if self.client_ca is not None and self.certificate is None:
            raise ValueError("client_ca asks clients for certificates over TLS; set certificate and private_key too")
        return self


class StatsdConfig(Section):
    target: Address
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "ddc"
    interval: Annotated[Duration, Field(gt=0)] = "10s"


SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
                     "authpriv", "ftp", "ntp", "audit", "alert", "clock",
                     "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")


class SyslogConfig(Section):
    """RFC 5424 syslog, in addition to the log lines on stderr."""

    target: Address
    protocol: Literal["udp", "tcp"] = "udp"
    facility: Literal[SYSLOG_FACILITIES] = "local0"
    app_name: Annotated[str, Field(pattern=r"^[!-~]{1,48}$")] = "ddc"


class TelemetryConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    stats_interval: Annotated[Duration, Field(gt=0)] = "10s"
    http: HttpConfig | None = None
    statsd: StatsdConfig | None = None
    syslog: SyslogConfig | None = None

"""The UDP handler's config: where the ingress listens, where the egress sends."""

from typing import Annotated, Literal

from pydantic import Field

from ddc.config.values import Address, Size
from ddc.handlers.config import SinkSection, SourceSection


class UdpSourceConfig(SourceSection):
    implementation = "ddc.handlers.udp.handler:UdpSource"
    type: Literal["udp"]
    listen: Address
    receive_buffer: Annotated[Size, Field(ge=4096)] = "8MiB"

    @property
    def identity(self) -> str:
        return str(self.listen)


class UdpSinkConfig(SinkSection):
    implementation = "ddc.handlers.udp.handler:UdpSink"
    type: Literal["udp"]
    target: Address
    send_buffer: Annotated[Size, Field(ge=4096)] = "4MiB"

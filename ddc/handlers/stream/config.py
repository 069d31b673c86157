"""The byte-stream handler's config (`type = "file"`): a file, a pipe, stdin or stdout."""

from typing import Annotated, Literal

from pydantic import Field

from ddc.config.values import Size
from ddc.handlers.config import SinkSection, SourceSection


class FileSourceConfig(SourceSection):
    """A byte stream: a file, a pipe or stdin ("-"), read in chunks until its end."""

    implementation = "ddc.handlers.stream.handler:FileSource"
    type: Literal["file"]
    path: Annotated[str, Field(min_length=1)] = "-"
    chunk_size: Annotated[Size, Field(ge=1, le=64 * 1024 * 1024)] = "1MiB"
    stop_at_end: bool = True

    @property
    def identity(self) -> str:
        return self.path


class FileSinkConfig(SinkSection):
    """A byte stream: written in order to a file or stdout ("-")."""

    implementation = "ddc.handlers.stream.handler:FileSink"
    type: Literal["file"]
    path: Annotated[str, Field(min_length=1)] = "-"
    max_reorder_bytes: Annotated[Size, Field(ge=1024 * 1024)] = "256MiB"
    stop_after_sender_shutdown: bool = False

"""The directory handler's config (`type = "directory"`): a folder watched on the ingress, a folder written on
the egress."""

from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from ddc.config.values import Duration, Size
from ddc.handlers.config import SinkSection, SourceSection
from ddc.handlers.directory import chunks

Pattern = Annotated[str, Field(min_length=1)]
Folder = Annotated[str, Field(min_length=1)]

DEFAULT_IGNORE = [".*", "*.part", "*.partial", "*.tmp", "*.swp", "*~"]


class DirectorySourceConfig(SourceSection):
    """Files of a folder, each sent once it is complete. `path` is the folder (names are relative to it), or a
    list of files and folders each sent under its own name (`ddc send`, with `once`)."""

    implementation = "ddc.handlers.directory.source:DirectorySource"
    type: Literal["directory"]
    path: Folder | Annotated[list[Folder], Field(min_length=1)]
    state_directory: Folder | None = None
    once: bool = False
    ignore: list[Pattern] = DEFAULT_IGNORE
    priority: list[Pattern] = []
    stable_after: Annotated[Duration, Field(ge=0)] = "2s"
    scan_interval: Annotated[Duration, Field(gt=0)] = "30s"
    after_sent: Literal["leave", "move", "delete"] = "leave"
    sent_directory: Folder | None = None
    chunk_size: Annotated[Size, Field(ge=4096, le=64 << 20)] = "1MiB"
    parallel_files: Annotated[int, Field(ge=1, le=1024)] = 4
    resend: Annotated[int, Field(ge=0, le=100)] = 0
    resend_delay: Annotated[Duration, Field(ge=0)] = "1min"
    max_queued_files: Annotated[int, Field(ge=1, le=10_000_000)] = 1_000_000

    @property
    def identity(self) -> str:
        return str(self.path)

    @property
    def paths(self) -> list[str]:
        return self.path if isinstance(self.path, list) else [self.path]

    @model_validator(mode="after")
    def coherent(self):
        if isinstance(self.path, list) and not self.once:
            raise ValueError("a list of paths is sent once (`ddc send`): set once = true, or watch one folder")
        if self.after_sent == "move" and self.sent_directory is None:
            raise ValueError('after_sent = "move" needs sent_directory: the folder that sent files are moved to '
                             "(outside the watched folder)")
        return self

    def check_link(self, link) -> None:
        if link.filters:
            raise ValueError("a directory link takes no filters: its records are pieces of files, and a file "
                             "missing a piece is never delivered")
        if link.buffer.when_full == "drop":
            raise ValueError('a directory source waits for the link: buffer.when_full must be "block"')
        largest = self.chunk_size + chunks.HEAD.size + chunks.FILE.size + chunks.MAX_PATH_BYTES + 64
        if largest > link.transport.max_frame_size or largest > link.buffer.size:
            raise ValueError(f"chunk_size {self.chunk_size} does not fit a frame (max_frame_size "
                             f"{link.transport.max_frame_size}) and the buffer (buffer.size {link.buffer.size}) "
                             "with a chunk's description; lower chunk_size")


class DirectorySinkConfig(SinkSection):
    """Files written into a folder, each under its name only once it is whole and its SHA-256 matches."""

    implementation = "ddc.handlers.directory.sink:DirectorySink"
    type: Literal["directory"]
    path: Folder
    quarantine_directory: Folder | None = None
    report_file: Folder | None = None
    existing: Literal["overwrite", "keep_both", "refuse"] = "overwrite"
    keep_permissions: bool = False
    fsync: bool = True
    max_file_size: Annotated[Size, Field(ge=1)] = "1TiB"
    max_files_in_progress: Annotated[int, Field(ge=1, le=100_000)] = 256
    incomplete_timeout: Annotated[Duration, Field(gt=0)] = "5min"
    stop_after_sender_shutdown: bool = False
    _reorder_seconds: float = PrivateAttr(default=5.0)

    def check_link(self, link) -> None:
        if link.filters:
            raise ValueError("a directory link takes no filters: its records are pieces of files, and a file "
                             "missing a piece is never delivered")
        self._reorder_seconds = link.transport.frame_timeout

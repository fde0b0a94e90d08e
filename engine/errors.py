"""The engine's exception hierarchy: every error says what was wrong and where."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class CaptureError(EngineError, ValueError):
    """A capture file (or stream) is malformed, truncated or of an unsupported kind.

    ``record`` is the zero-based number of the record (pcap) or block (pcapng) where the problem
    was found, ``offset`` its byte offset in the file, ``path`` the file when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        record: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.record = record
        self.offset = offset
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

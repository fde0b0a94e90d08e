"""How every ``pktx`` process logs: one format chosen by ``--log-format`` (text lines for people,
JSON lines for collectors), one verbosity meaning (``-q`` warnings and errors, ``-v`` more),
the process's role and its job on every line, and no secret in any line.

A JSON line is one object: ``time`` (RFC 3339, UTC, microseconds), ``level``, ``role`` (the
command: ``deliver``, ``worker``, ``daemon``, ``broker``...), ``logger``, ``message``, then
the ids the line is about when there are any (``job_id``, ``award_id``, ``request_id``: from
the process's context, ``PKTX_LOG_JOB_ID``/``PKTX_LOG_AWARD_ID`` set by the daemon for the
delivery it starts, a record's ``extra``, or a daemon line's ``job %d:`` prefix), and
``error`` with the traceback of an exception. Secrets the process holds (API keys, service
keys) are registered with `register_secret` and replaced by ``***`` in every line, whatever
logged them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime

FORMATS = ("text", "json")
CONTEXT_ENV = {"job_id": "PKTX_LOG_JOB_ID", "award_id": "PKTX_LOG_AWARD_ID"}
_IDS = ("job_id", "award_id", "request_id")
_CHATTY = ("alembic",)
MASK = "***"
_MIN_SECRET = 6  # shorter strings would mask ordinary words; no key is that short

_secrets: set[str] = set()
_lock = threading.Lock()
_context: dict[str, object] = {}


def register_secret(value: str | bytes | None) -> None:
    """Never show ``value`` in a log line (a key given as bytes: its hex, in either case)."""
    if not value:
        return
    if isinstance(value, bytes):
        value = value.hex()
    forms = {value, value.lower(), value.upper()}
    with _lock:
        _secrets.update(f for f in forms if len(f) >= _MIN_SECRET)


def redact(text: str) -> str:
    """``text`` with every registered secret masked (longest first, so a key that contains
    another is masked whole)."""
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def set_context(**ids: object) -> None:
    """Ids every later line of this process carries (None removes one)."""
    for key, value in ids.items():
        if value is None:
            _context.pop(key, None)
        else:
            _context[key] = value


class _Redacting(logging.Formatter):
    """The formatter's whole output, exception text included, with secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class TextFormatter(_Redacting):
    def __init__(self, role: str) -> None:
        super().__init__(
            f"pktx {role}: %(levelname)s: %(message)s"
            if role
            else "pktx: %(levelname)s: %(message)s"
        )


class JsonFormatter(_Redacting):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _IDS:
            value = getattr(record, key, None)
            if value is None:
                value = _context.get(key)
            if value is None and key == "job_id":
                value = _job_of(record)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["error"] = record.exc_text
        return redact(json.dumps(line, default=str, ensure_ascii=False))


def _job_of(record: logging.LogRecord) -> int | None:
    """The job a line is about by the daemon's convention: it starts ``job %d:``."""
    if (
        isinstance(record.msg, str)
        and record.msg.startswith("job %d")
        and record.args
        and isinstance(record.args, tuple)
        and isinstance(record.args[0], int)
    ):
        return record.args[0]
    return None


def level_for(verbose: int, quiet: bool, *, service: bool = False) -> int:
    """``-q``: warnings and errors; default: warnings, or info for a long-running service
    (worker, daemon, broker); each ``-v`` one step more, down to debug."""
    if quiet:
        return logging.WARNING
    base = logging.INFO if service else logging.WARNING
    return max(logging.DEBUG, base - 10 * verbose)


def setup(
    role: str,
    *,
    fmt: str = "text",
    verbose: int = 0,
    quiet: bool = False,
    service: bool = False,
    stream=None,
) -> None:
    """Configure the root logger of this process: one handler on stderr in ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format is one of {', '.join(FORMATS)}, not {fmt!r}")
    for key, env in CONTEXT_ENV.items():
        if os.environ.get(env):
            _context.setdefault(key, _as_id(os.environ[env]))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else TextFormatter(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_for(verbose, quiet, service=service))
    for name in _CHATTY:  # their info is their own bookkeeping: shown from -vv
        logging.getLogger(name).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)


def inherited(role: str) -> None:
    """`setup` in a process another started (the broker's worker processes): the format and
    level its parent chose, passed in the environment (`for_children`)."""
    fmt = os.environ.get("PKTX_LOG_FORMAT") or "text"
    level = os.environ.get("PKTX_LOG_LEVEL", "")
    setup(role, fmt=fmt if fmt in FORMATS else "text")
    if level.isdigit():
        logging.getLogger().setLevel(int(level))


def for_children() -> dict[str, str]:
    """The environment that makes a child process log as this one does (`inherited`)."""
    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) else "text"
    return {"PKTX_LOG_FORMAT": fmt, "PKTX_LOG_LEVEL": str(root.level)}


def _as_id(text: str) -> int | str:
    return int(text) if text.isdigit() else text

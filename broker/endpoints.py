"""Where a request's stream comes from and goes to (its ``source`` and ``sink``), checked when
the request is made and handed to the delivering provider's daemon in the job's spec.

An endpoint is ``udp://HOST:PORT`` or ``zmq://HOST:PORT`` (the device or an upstream node sends,
the recipient or a downstream node receives), ``iface:NAME`` (a provider's capture interface),
or the name of a capture file in the delivering daemon's files folder (tests and the demo): a
relative path of plain characters, never absolute, never with ``..``. The daemon confines file
names to its folder again (engine/daemon/runs.py): this check is for a clear answer at once.
"""

from __future__ import annotations

import re

from broker.errors import InvalidInput

_HOST_PORT = re.compile(r"^(udp|zmq)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$")
_IFACE = re.compile(r"^iface:[A-Za-z0-9_.:-]{1,15}(\?[A-Za-z0-9_=&]{0,100})?$")
_FILE = re.compile(r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,254}$")


def check_endpoint(value: str | None, *, field: str) -> str | None:
    """``value`` if it is an endpoint a daemon can deliver from or to (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} is a string", field=field)
    m = _HOST_PORT.match(value)
    if m:
        if not 1 <= int(m.group(3)) <= 65535:
            raise InvalidInput(f"{field} {value!r}: the port is 1..65535", field=field)
        return value
    if value.startswith("iface:"):
        if not _IFACE.match(value):
            raise InvalidInput(f"{field} {value!r}: iface:NAME (up to 15 characters)", field=field)
        return value
    if "://" in value:
        raise InvalidInput(
            f"{field} {value!r}: udp://HOST:PORT, zmq://HOST:PORT, iface:NAME "
            f"or a capture file's name",
            field=field,
        )
    if not _FILE.match(value) or ".." in value.split("/") or value.startswith("/"):
        raise InvalidInput(
            f"{field} {value!r}: a capture file is named by a relative path of "
            f"letters, digits, '.', '_', '-' and '/', without '..'",
            field=field,
        )
    return value

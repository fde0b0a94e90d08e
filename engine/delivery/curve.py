"""ZeroMQ CURVE keys: who may join a dispatcher, and how a worker proves it is one of them.

A key folder (``pktx keys generate DIR``) holds the dispatcher's key pair (``server.key``,
``server.key_secret``) and a worker key pair (``worker.key``, ``worker.key_secret``). The
dispatcher admits every worker public key in ``DIR/authorized/`` plus ``DIR/worker.key``; more
workers are authorised by dropping their ``.key`` files into ``authorized/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from engine.errors import EngineError

log = logging.getLogger(__name__)


def generate_keys(folder, *, worker_name: str = "worker") -> dict[str, Path]:
    """Create the key folder (server pair, one worker pair, ``authorized/``)."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    (d / "authorized").mkdir(exist_ok=True)
    out = {}
    for name in ("server", worker_name):
        if not (d / f"{name}.key_secret").exists():
            zmq.auth.create_certificates(d, name)
        out[name] = d / f"{name}.key_secret"
        os.chmod(d / f"{name}.key_secret", 0o600)
    return out


def _load(path: Path, secret: bool):
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot load CURVE key {path}: {exc}") from None
    if secret and private is None:
        raise EngineError(f"{path} holds no secret key")
    return public, private


class _Gate:
    """Admits the public keys it was given; logs every refusal (ZAP callback)."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning(
                "refused a worker: its CURVE public key %s is not authorised",
                key.decode(errors="replace"),
            )
        return ok


def secure_server(ctx: zmq.Context, sock: zmq.Socket, folder) -> ThreadAuthenticator:
    """Make ``sock`` a CURVE server admitting the authorised worker keys; returns the ZAP
    authenticator, which the caller stops when done."""
    d = Path(folder)
    public, secret = _load(d / "server.key_secret", True)
    allowed: set[bytes] = set()
    candidates = list((d / "authorized").glob("*.key")) if (d / "authorized").is_dir() else []
    candidates += [p for p in d.glob("*.key") if p.name != "server.key"]
    for p in candidates:
        allowed.add(_load(p, False)[0])
    if not allowed:
        raise EngineError(f"no authorised worker keys in {d} (expected *.key files)")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("pktx.zap"))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_Gate(allowed))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def check_client_keys(folder, *, name: str = "worker") -> None:
    """Raise the error ``secure_client`` would, without a socket (before local workers start,
    so that a bad folder is one clean error of the dispatcher, not one per worker)."""
    d = Path(folder)
    _load(d / f"{name}.key_secret", True)
    _load(d / "server.key", False)


def secure_client(sock: zmq.Socket, folder, *, name: str = "worker") -> None:
    """Make ``sock`` a CURVE client with the worker key pair, trusting the folder's server."""
    d = Path(folder)
    public, secret = _load(d / f"{name}.key_secret", True)
    server_public, _ = _load(d / "server.key", False)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public

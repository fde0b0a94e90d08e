"""Service parameters sealed to a provider's daemons: the provider's X25519 key pair, and the
sealed box a user makes of a job's secret parameters (keys) for them.

A box is made for one award delivered by one provider and opens only with that provider's
private key, only for that award: ``VERSION || ephemeral public key (32) || ciphertext``. The
sealer makes a fresh X25519 key pair, derives a one-time key and nonce from the Diffie-Hellman
secret with HKDF-SHA256 (salted with nothing, its info the label, the ephemeral and the
recipient's public key, as HPKE's DHKEM binds them), and encrypts a JSON object
``{"SERVICE.PARAM": "VALUE", ...}`` with ChaCha20-Poly1305, the associated data naming the
award and the provider (`binding`): a box moved onto another award, or to another provider,
does not authenticate. The primitives are the ``cryptography`` package's; nothing here is a
cipher of its own.

The private key lives in a PEM file (PKCS#8, mode 0600) on the provider's nodes, deployed
like its API key; the broker only ever holds the public key and the boxes (docs/daemon.md,
"Sealed service parameters").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import EngineError

log = logging.getLogger(__name__)

VERSION = b"\x01"
_LABEL = b"pktx sealed service parameters v1"
_KEY, _NONCE = 32, 12
PUBLIC_SIZE = 32
OVERHEAD = len(VERSION) + PUBLIC_SIZE + 16  # the version, the ephemeral key, the tag
MAX_BOX = 4096


class SealingError(EngineError):
    """A box that cannot be made or opened; the message never holds what is in it."""


def binding(award_id: int, provider_id: int) -> bytes:
    """The associated data of a box: the award it is for and the provider delivering it."""
    return f"pktx-sealed-params award={int(award_id)} provider={int(provider_id)}".encode()


def public_text(public: X25519PublicKey) -> str:
    """A public key as the broker carries it: its 32 raw bytes in base64."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key(text: str) -> X25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SealingError("a sealing key is 32 bytes in base64") from None
    if len(raw) != PUBLIC_SIZE:
        raise SealingError(f"a sealing key is {PUBLIC_SIZE} bytes, not {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def fingerprint(text: str) -> str:
    """A short name of a public key (the first 16 hex digits of its SHA-256), to compare by
    eye and to pin."""
    return hashlib.sha256(base64.b64decode(text)).hexdigest()[:16]


def _kdf(shared: bytes, ephemeral: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY + _NONCE,
        salt=None,
        info=_LABEL + ephemeral + recipient,
    ).derive(shared)
    return okm[:_KEY], okm[_KEY:]


def seal(recipient: str, params: dict[str, str], aad: bytes) -> bytes:
    """A box of ``params`` for the holder of ``recipient``'s private key, bound to ``aad``."""
    peer = public_key(recipient)
    ephemeral = X25519PrivateKey.generate()
    mine = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key, nonce = _kdf(ephemeral.exchange(peer), mine, base64.b64decode(recipient))
    body = ChaCha20Poly1305(key).encrypt(nonce, json.dumps(params).encode(), aad)
    box = VERSION + mine + body
    if len(box) > MAX_BOX:
        raise SealingError(f"the sealed parameters take {len(box)} bytes; at most {MAX_BOX}")
    return box


class SealingKey:
    """A provider's sealing key pair (the private key from its PEM file)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public = public_text(private.public_key())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    @classmethod
    def load_or_create(cls, path: str) -> SealingKey:
        """The key pair in ``path``, made there (mode 0600) when there is none yet."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(path)
        except OSError as exc:
            raise SealingError(f"sealing key {path}: {exc.strerror or exc}") from None
        private = X25519PrivateKey.generate()
        with os.fdopen(fd, "wb") as f:
            f.write(
                private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        log.info("made a sealing key pair in %s", path)
        return cls(private)

    @classmethod
    def load(cls, path: str) -> SealingKey:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                pem = f.read(8192)
        except OSError as exc:
            raise SealingError(f"sealing key {path}: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "sealing key %s can be read by other users (mode %04o); chmod 600 it",
                path,
                stat.S_IMODE(mode),
            )
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise SealingError(f"sealing key {path}: not a PEM private key") from None
        if not isinstance(private, X25519PrivateKey):
            raise SealingError(f"sealing key {path}: not an X25519 private key")
        return cls(private)

    def open(self, box: bytes, aad: bytes) -> dict[str, str]:
        """What ``box`` holds, if it was sealed to this key for ``aad``; `SealingError` for
        anything else (tampered with, for another award or provider, to another key)."""
        if len(box) < OVERHEAD or box[:1] != VERSION:
            raise SealingError("the sealed parameters are not a sealed box of this version")
        ephemeral = box[1 : 1 + PUBLIC_SIZE]
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
            key, nonce = _kdf(shared, ephemeral, base64.b64decode(self.public))
            text = ChaCha20Poly1305(key).decrypt(nonce, box[1 + PUBLIC_SIZE :], aad)
        except (InvalidTag, ValueError):
            raise SealingError(
                "the sealed parameters do not open with this provider's "
                "sealing key for this award (tampered with, sealed for another "
                "award or provider, or to another key)"
            ) from None
        try:
            params = json.loads(text)
        except ValueError:
            params = None
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise SealingError(
                "the sealed parameters are not an object of SERVICE.PARAM names and text values"
            )
        return params

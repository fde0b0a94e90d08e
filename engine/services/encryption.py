"""encrypt / decrypt: AES-256-GCM on TCP/UDP payloads, the nonce carried in the packet.

An encrypted payload says what it is, and ``decrypt`` authenticates all of it:

====== ======== ==============================================================================
offset size     field
====== ======== ==============================================================================
0      3        header: magic ``0xA5 0xE6``, format version ``0x02``
3      12       nonce
15     n + 1    ciphertext of the flags byte (the checksum forms to restore, see
                ``engine.services.payload``) then the original payload of n bytes
16 + n 16       GCM tag
====== ======== ==============================================================================

32 bytes longer than the original. The nonce is fresh and random for every packet
(``os.urandom``; with 96 random bits, stay well below 2**32 packets per key, as NIST SP
800-38D asks). Lengths and checksums are fixed as for any payload rewrite, so the packets stay
valid on the wire.

What is authenticated: the flags and the payload (encrypted), and as associated data a domain
label, the header, the IP version and the transport protocol; with ``bind=flow`` (the default)
also both addresses and both ports, so a payload cannot be moved into another flow or
direction. Nothing else of the headers is bound (TTLs, IP ids, TCP sequence numbers change in
transit). Anything that rewrites addresses or ports between ``encrypt`` and ``decrypt`` (NAT,
``anonymize``) makes every packet fail with ``bind=flow``; use ``bind=none`` on both sides there.

Packets ``encrypt`` cannot take (fragments, truncated, empty, non-TCP/UDP: see
``engine.services.payload``) pass as they are, counted, and ``decrypt`` leaves the same packets
alone. A payload the 32 bytes would no longer fit (a 65,535-byte IP packet, a full PPPoE
session) cannot be encrypted at all: by default that fails the run (``too_large=fail``), as
sending in clear what was to be encrypted would be a silent leak. ``too_large=clear`` on both
sides lets such packets through in clear, counted as ``passed_clear`` by both: ``decrypt`` then
passes a payload without the header only if it is too large to have been encrypted, so an
attacker cannot strip the encryption off ordinary packets; what it passes so is not
authenticated. (``encrypt`` still refuses a too-large payload that begins with the header,
which ``decrypt`` could not tell from a damaged encrypted one.)

How it runs: everything is done for the whole segment in compiled code
(``engine.services.payload``, ``engine.packet.payload_kernels``), the cipher too: one call into
libcrypto per segment (``ext._aesgcm``) where it was built; else, per packet, Python calls
``encrypt_into``/``decrypt_into`` from ``map()`` with nonce and associated-data views kept by
the service (see docs/engine.md). Both write the same bytes.

Every other payload ``decrypt`` takes must authenticate: one that does not (wrong key,
modified bytes, no header: ``not_encrypted``) is counted in ``auth_failures`` and dropped
(``on_fail=drop``) or passed as it is (``keep``); ``pktx deliver`` fails a run whose
authentication failures pass ``--max-auth-failures``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from itertools import islice
from operator import length_hint
from typing import ClassVar

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.capture.batch import PacketBatch
from engine.delivery.meter import iso_ns
from engine.packet.flowkeys import FlowKeys
from engine.packet.payload_kernels import _flow_rows
from engine.services.base import Param, Service, ServiceError, hex_key
from engine.services.payload import (
    FLAGS_KNOWN,
    Payloads,
    Selection,
    fits,
    pack_behind,
    packed_starts,
    replace,
    reserve,
    select,
)

try:  # the whole segment in one call into libcrypto, where it was built (setup.py)
    from ext._aesgcm import Gcm as _Gcm

    Gcm: type[_Gcm] | None = _Gcm
except ImportError:  # pragma: no cover - a build without OpenSSL's headers
    Gcm = None

HEADER = b"\xa5\xe6\x02"  # magic, then the format version
NONCE_SIZE = 12
TAG_SIZE = 16
BODY_AT = len(HEADER) + NONCE_SIZE  # where the ciphertext starts
OVERHEAD = BODY_AT + 1 + TAG_SIZE
_LABEL = b"pktx-aes256gcm-2"
_FIXED = np.frombuffer(_LABEL + HEADER, np.uint8)
_BIND = ("flow", "none")
_TOO_LARGE = ("fail", "clear")


def _aad_width(flow: bool) -> int:
    return len(_LABEL) + len(HEADER) + 2 + (36 if flow else 0)


def _associated_data(
    sel: Selection, flow: bool, rows: np.ndarray, which: np.ndarray | None = None
) -> None:
    """Into ``rows``, one row of associated data per selected packet (of those at ``which``):
    label, header, IP version, protocol and, for a flow binding, source and destination
    address (16 bytes, IPv4 zero-filled) and ports."""
    index = sel.index if which is None else sel.index[which]
    k: FlowKeys = sel.keys
    _flow_rows(_FIXED, k.family, k.proto, k.src, k.dst, k.sport, k.dport, index, flow, rows)


class _Rows:
    """A buffer of fixed-width rows kept from segment to segment, with a ``memoryview`` of each
    row made once: the cipher's nonce and associated-data arguments then come from a list
    rather than being sliced anew for every packet."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.array = np.empty((0, width), np.uint8)
        self.views: list[memoryview] = []

    def take(self, m: int) -> tuple[np.ndarray, list[memoryview]]:
        """The first ``m`` rows (to fill) and their views."""
        if m > len(self.views):
            w = self.width
            size = max(m, 2 * len(self.views))
            self.array = np.empty((size, w), np.uint8)
            mv = self.array.reshape(-1).data
            self.views = [mv[k : k + w] for k in range(0, size * w, w)]
        return self.array[:m], self.views[:m]


def _chunks(mv: memoryview, bounds: list[int]):
    """Lazily, ``mv[bounds[i]:bounds[i + 1]]`` for each i: back-to-back regions."""
    return map(mv.__getitem__, map(slice, bounds, islice(bounds, 1, None)))


def _bounds(starts: np.ndarray, end: int) -> list[int]:
    return np.append(starts, end).tolist()


class _AesGcm(Service):
    params: ClassVar[tuple[Param, ...]] = (
        Param("key", hex_key(32), help="the AES-256 key: 64 hex digits", secret=True),
        Param(
            "bind",
            str,
            "flow",
            "flow: authenticate the addresses and ports too; none: "
            "only the protocol (survives NAT and anonymize)",
            choices=_BIND,
        ),
    )

    def setup(self) -> None:
        self._aead = AESGCM(self.config["key"])
        # The segment cipher (ext._aesgcm) when built, else one cryptography call per packet;
        # the output is the same byte for byte (tests compare both with the naive loop).
        self._segment_cipher = Gcm(self.config["key"]) if Gcm is not None else None
        self._random = os.urandom  # where nonces come from (tests fix it to compare outputs)
        self._flow = self.config["bind"] == "flow"
        self._aad = _Rows(_aad_width(self._flow))
        self._nonces = _Rows(NONCE_SIZE)
        self._buffers: dict[str, np.ndarray] = {}

    def _scratch(self, name: str) -> Callable[[int], np.ndarray]:
        """A function giving ``size`` bytes of a buffer kept from segment to segment (for what
        does not outlive ``process``: plaintexts, ciphertexts before they are placed)."""

        def take(size: int) -> np.ndarray:
            have = self._buffers.get(name)
            if have is None or len(have) < size:
                grown = 0 if have is None else 2 * len(have)
                have = self._buffers[name] = np.empty(max(size, grown), np.uint8)
            return have[:size]

        return take


def _headed(payloads: Payloads) -> np.ndarray:
    """Per payload, whether it begins with the encrypted form's header."""
    out = payloads.lengths >= len(HEADER)
    if not out.any():
        return out
    at = np.where(out, payloads.starts, 0)
    for k, byte in enumerate(HEADER):
        out &= payloads.data[at + k] == byte
    return out


def _too_large_error(sel: Selection, i: int, why: str) -> ServiceError:
    row = int(sel.index[i])
    b = sel.batch
    return ServiceError(
        f"service 'encrypt': the packet captured at {iso_ns(int(b.ts_ns[row]))} (number {row} "
        f"of {len(b)} in its segment, {int(b.caplen[row])} bytes, a payload of "
        f"{int(sel.payloads.lengths[i])}) {why}"
    )


class Encrypt(_AesGcm):
    name = "encrypt"
    summary = "encrypt TCP/UDP payloads with AES-256-GCM (nonce in the packet)"
    params = (
        *_AesGcm.params,
        Param(
            "too_large",
            str,
            "fail",
            "a payload too large to encrypt: fail the run, or "
            "pass it in clear, counted as passed_clear (give decrypt too_large=clear too)",
            choices=_TOO_LARGE,
        ),
    )

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        m = len(sel)
        # Plaintexts (flags byte, payload) back to back; outputs laid out as header, nonce,
        # then room for the ciphertext and tag: one compiled pass each.
        plain = pack_behind(old.flags[:, None], old, old.lengths + 1, self._scratch("plain"))
        out_len = plain.lengths + BODY_AT + TAG_SIZE
        too_large = ~fits(sel, out_len)
        if too_large.any():
            self._check_clear(sel, too_large)
        nonces, nonce_views = self._nonces.take(m)
        nonces[:] = np.frombuffer(self._random(NONCE_SIZE * m), np.uint8).reshape(m, NONCE_SIZE)
        lead = np.empty((m, BODY_AT), np.uint8)
        lead[:, : len(HEADER)] = np.frombuffer(HEADER, np.uint8)
        lead[:, len(HEADER) :] = nonces
        # The new batch, header and nonce in place and room behind them for ciphertext and tag.
        res = reserve(sel, out_len, lead)
        done = res.done
        aad, aad_views = self._aad.take(m)
        _associated_data(sel, self._flow, aad)
        at, p0, p1 = res.at + BODY_AT, plain.starts, plain.starts + plain.lengths
        todo = None if done.all() else np.flatnonzero(done)  # else some pass in clear
        if todo is not None:
            at, p0, p1, out_len = at[todo], p0[todo], p1[todo], out_len[todo]
        if self._segment_cipher is not None:
            rows = np.arange(m, dtype=np.int64) if todo is None else todo.astype(np.int64)
            if len(rows):  # (with none, the batch is the input as it came: read-only)
                self._segment_cipher.seal(
                    nonces,
                    aad,
                    rows,
                    plain.data,
                    p0.astype(np.int64),
                    p1.astype(np.int64),
                    res.batch.data,
                    at.astype(np.int64),
                )
        else:
            if todo is not None:
                nonce_views = [nonce_views[i] for i in todo.tolist()]
                aad_views = [aad_views[i] for i in todo.tolist()]
            mo = res.batch.data.data
            mp = plain.data.data
            # The only per-packet work left in Python: the cipher call writing into the new
            # batch, its arguments sliced by map() in C rather than by a loop in bytecode
            # (nonces and associated data from views made once, in rows kept by the service).
            deque(
                map(
                    self._aead.encrypt_into,
                    nonce_views,
                    map(mp.__getitem__, map(slice, p0.tolist(), p1.tolist())),
                    aad_views,
                    map(mo.__getitem__, map(slice, at.tolist(), (at + out_len - BODY_AT).tolist())),
                ),
                maxlen=0,
            )
        result = res.finish()
        c = self.counters
        sel.count(c)
        c["packets_encrypted"] += int(done.sum())
        c["bytes_encrypted"] += int(old.lengths[done].sum())
        if too_large.any():
            c["passed_clear"] += int(too_large.sum())
        return result

    def _check_clear(self, sel: Selection, too_large: np.ndarray) -> None:
        """Fail on a too-large payload unless passing it in clear was asked for and
        ``decrypt`` will be able to tell it is in clear."""
        if self.config["too_large"] == "fail":
            i = int(np.flatnonzero(too_large)[0])
            more = int(too_large.sum()) - 1
            raise _too_large_error(
                sel,
                i,
                f"is too large to encrypt: {OVERHEAD} more bytes would not fit its "
                f"length fields{f' ({more} more such packets)' if more else ''}; "
                "too_large=clear (given to encrypt and decrypt) passes such packets in clear, "
                "counted as passed_clear",
            )
        ambiguous = too_large & _headed(sel.payloads)
        if ambiguous.any():
            raise _too_large_error(
                sel,
                int(np.flatnonzero(ambiguous)[0]),
                "is too large to encrypt and cannot pass in clear either: its payload begins "
                "like an encrypted one, which decrypt would take for a damaged one",
            )


class Decrypt(_AesGcm):
    name = "decrypt"
    summary = "decrypt and authenticate what encrypt produced; drop what fails"
    params = (
        *_AesGcm.params,
        Param(
            "on_fail",
            str,
            "drop",
            "a packet that does not authenticate: drop it, or keep it as it is",
            choices=("drop", "keep"),
        ),
        Param(
            "too_large",
            str,
            "fail",
            "a payload in clear: an authentication failure, or "
            "with clear passed (not authenticated, counted as passed_clear) when it is too "
            "large to have been encrypted",
            choices=_TOO_LARGE,
        ),
    )

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        m = len(sel)
        headed = _headed(old) & (old.lengths >= OVERHEAD)
        ok = headed.copy()
        pt_len = np.where(ok, old.lengths - BODY_AT - TAG_SIZE, 0)
        pt_at = packed_starts(pt_len)
        plain = self._scratch("plain")(int(pt_len.sum()))
        todo = np.flatnonzero(ok)
        k = len(todo)
        aad, aad_views = self._aad.take(k)
        _associated_data(sel, self._flow, aad, todo)
        data = np.ascontiguousarray(old.data)
        md = data.data
        s = old.starts[todo]
        nonces, nonce_views = self._nonces.take(k)
        nonces[:] = data[(s + len(HEADER))[:, None] + np.arange(NONCE_SIZE)]
        if self._segment_cipher is not None and k:
            good = np.empty(k, np.uint8)
            self._segment_cipher.open(
                nonces,
                aad,
                data,
                (s + BODY_AT).astype(np.int64),
                (s + old.lengths[todo]).astype(np.int64),
                plain,
                pt_at[todo].astype(np.int64),
                good,
            )
            ok[todo[good == 0]] = False
        else:
            self._decrypt_per_packet(
                md, s, old.lengths[todo], todo, nonce_views, aad_views[:k], plain, pt_at, ok
            )
        clear = ~headed
        if self.config["too_large"] == "clear" and clear.any():
            # In clear, and no encrypted packet could have been this large.
            passed = clear & ~fits(sel, old.lengths + OVERHEAD)
        else:
            passed = np.zeros(m, bool)
        flags = np.zeros(m, np.uint8)
        flags[ok] = plain[pt_at[ok]] & FLAGS_KNOWN
        new = Payloads(plain, pt_at + 1, np.maximum(pt_len - 1, 0), flags)
        result, done = replace(sel, new, ok)
        c = self.counters
        sel.count(c)
        failed = ~ok & ~passed
        c["packets_decrypted"] += int(done.sum())
        c["bytes_decrypted"] += int(new.lengths[done].sum())
        c["auth_failures"] += int(failed.sum())
        c["not_encrypted"] += int((clear & ~passed).sum())
        c["passed_clear"] += int(passed.sum())
        if failed.any() and self.config["on_fail"] == "drop":
            c["dropped"] += int(failed.sum())
            keep = np.ones(len(result), bool)
            keep[sel.index[failed]] = False
            return result.take(np.flatnonzero(keep))
        return result

    def _decrypt_per_packet(
        self,
        md: memoryview,
        s: np.ndarray,
        lengths: np.ndarray,
        todo: np.ndarray,
        nonce_views: list,
        aad_views: list,
        plain: np.ndarray,
        pt_at: np.ndarray,
        ok: np.ndarray,
    ) -> None:
        """``cryptography``'s ``decrypt_into`` per packet (a build without ext._aesgcm)."""
        k = len(todo)
        # As in encrypt, map() slices the other arguments. A failure stops it after the inputs
        # of the failed call were taken: the same iterator resumes with the next packet, and
        # how many ciphertext positions are left to take says which packet failed.
        left = iter((s + BODY_AT).tolist())
        opened = map(
            self._aead.decrypt_into,
            nonce_views,
            map(md.__getitem__, map(slice, left, (s + lengths).tolist())),
            aad_views,
            _chunks(plain.data, _bounds(pt_at[todo], len(plain))),
        )
        while True:
            try:
                deque(opened, maxlen=0)
                break
            except InvalidTag:
                ok[todo[k - length_hint(left) - 1]] = False

"""encrypt / decrypt: AES-256-GCM on TCP/UDP payloads, the nonce carried in the packet.

An encrypted payload is ``nonce (12) || ciphertext || tag (16)``, 29 bytes longer than the
original: the plaintext is one flags byte (the checksum forms to restore, see
``engine.services.payload``) then the original payload. The nonce is fresh and random for every
packet (``os.urandom``; with 96 random bits, stay well below 2**32 packets per key, as NIST SP
800-38D asks). Lengths and checksums are fixed as for any payload rewrite, so the packets stay
valid on the wire.

What is authenticated: the flags and the payload (encrypted), and as associated data a domain
label, the IP version and the transport protocol; with ``bind=flow`` (the default) also both
addresses and both ports, so a payload cannot be moved into another flow or direction. Nothing
else of the headers is bound (TTLs, IP ids, TCP sequence numbers change in transit). Anything
that rewrites addresses or ports between ``encrypt`` and ``decrypt`` (NAT, ``anonymize``) makes
every packet fail with ``bind=flow``; use ``bind=none`` on both sides there.

Packets ``encrypt`` cannot take (fragments, truncated, empty, non-TCP/UDP: see
``engine.services.payload``) pass in the clear and are counted; so does a payload that would no
longer fit its length fields (``skipped_too_large``), which ``decrypt`` will then reject.
``decrypt`` expects every payload it can take to be encrypted: one that does not authenticate
(wrong key, modified bytes, too short, a packet that was never encrypted) is counted in
``auth_failures`` and dropped (``on_fail=drop``) or passed as it is (``keep``).
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine import backend
from engine.batch import PacketBatch
from engine.flowkeys import FlowKeys
from engine.services.base import Param, Service, hex_key
from engine.services.payload import (
    FLAGS_KNOWN,
    Payloads,
    Selection,
    packed_starts,
    replace,
    select,
)

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + 1 + TAG_SIZE
_LABEL = b"pktx-aes256gcm-1"
_BIND = ("flow", "none")


def _associated_data(sel: Selection, flow: bool) -> tuple[np.ndarray, int]:
    """One row of associated data per selected packet: label, IP version, protocol and, for a
    flow binding, source and destination address (16 bytes, IPv4 zero-filled) and ports."""
    keys: FlowKeys = sel.keys.take(sel.index)
    m = len(sel)
    width = len(_LABEL) + 2 + (36 if flow else 0)
    rows = np.empty((m, width), np.uint8)
    rows[:, : len(_LABEL)] = np.frombuffer(_LABEL, np.uint8)
    at = len(_LABEL)
    rows[:, at] = keys.family
    rows[:, at + 1] = keys.proto
    if flow:
        at += 2
        rows[:, at : at + 16] = keys.src
        rows[:, at + 16 : at + 32] = keys.dst
        rows[:, at + 32 : at + 34] = keys.sport.astype(">u2").view(np.uint8).reshape(m, 2)
        rows[:, at + 34 : at + 36] = keys.dport.astype(">u2").view(np.uint8).reshape(m, 2)
    return rows.reshape(-1), width


class _AesGcm(Service):
    params = (
        Param("key", hex_key(32), help="the AES-256 key: 64 hex digits", secret=True),
        Param("bind", str, "flow", "flow: authenticate the addresses and ports too; none: "
              "only the protocol (survives NAT and anonymize)", choices=_BIND),
    )

    def setup(self) -> None:
        self._aead = AESGCM(self.config["key"])
        self._flow = self.config["bind"] == "flow"


class Encrypt(_AesGcm):
    name = "encrypt"
    summary = "encrypt TCP/UDP payloads with AES-256-GCM (nonce in the packet)"

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        m = len(sel)
        # Plaintexts (flags byte, payload) back to back; outputs laid out as nonce, ct, tag.
        pt_len = old.lengths + 1
        pt_at = packed_starts(pt_len)
        plain = np.empty(int(pt_len.sum()), np.uint8)
        plain[pt_at] = old.flags
        gather = backend.capture.gather
        gather(np.ascontiguousarray(old.data), old.starts, old.lengths.astype(np.uint32), plain,
               pt_at + 1)
        out_len = pt_len + NONCE_SIZE + TAG_SIZE
        out_at = packed_starts(out_len)
        out = np.empty(int(out_len.sum()), np.uint8)
        nonces = np.frombuffer(os.urandom(NONCE_SIZE * m), np.uint8).reshape(m, NONCE_SIZE)
        out[out_at[:, None] + np.arange(NONCE_SIZE)] = nonces
        aad, width = _associated_data(sel, self._flow)
        seal = self._aead.encrypt_into
        mo, mp, ma = memoryview(out), memoryview(plain), memoryview(aad)
        for o, p, n, a in zip(out_at.tolist(), pt_at.tolist(), pt_len.tolist(),
                              range(0, m * width, width)):
            seal(mo[o : o + NONCE_SIZE], mp[p : p + n], ma[a : a + width],
                 mo[o + NONCE_SIZE : o + NONCE_SIZE + n + TAG_SIZE])
        new = Payloads(out, out_at, out_len, np.zeros(m, np.uint8))
        result, done = replace(sel, new)
        c = self.counters
        sel.count(c)
        c["packets_encrypted"] += int(done.sum())
        c["bytes_encrypted"] += int(old.lengths[done].sum())
        return result


class Decrypt(_AesGcm):
    name = "decrypt"
    summary = "decrypt and authenticate what encrypt produced; drop what fails"
    params = (
        *_AesGcm.params,
        Param("on_fail", str, "drop", "a packet that does not authenticate: drop it, or keep "
              "it as it is", choices=("drop", "keep")),
    )

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        m = len(sel)
        ok = old.lengths >= OVERHEAD
        pt_len = np.where(ok, old.lengths - NONCE_SIZE - TAG_SIZE, 0)
        pt_at = packed_starts(pt_len)
        plain = np.empty(int(pt_len.sum()), np.uint8)
        aad, width = _associated_data(sel, self._flow)
        data = np.ascontiguousarray(old.data)
        md, mp, ma = memoryview(data), memoryview(plain), memoryview(aad)
        open_ = self._aead.decrypt_into
        todo = np.flatnonzero(ok)
        for i, s, p, n in zip(todo.tolist(), old.starts[todo].tolist(), pt_at[todo].tolist(),
                              pt_len[todo].tolist()):
            try:
                open_(md[s : s + NONCE_SIZE], md[s + NONCE_SIZE : s + NONCE_SIZE + n + TAG_SIZE],
                      ma[i * width : (i + 1) * width], mp[p : p + n])
            except InvalidTag:
                ok[i] = False
        flags = np.zeros(m, np.uint8)
        flags[ok] = plain[pt_at[ok]] & FLAGS_KNOWN
        new = Payloads(plain, pt_at + 1, np.maximum(pt_len - 1, 0), flags)
        result, done = replace(sel, new, ok)
        c = self.counters
        sel.count(c)
        failed = ~ok
        c["packets_decrypted"] += int(done.sum())
        c["bytes_decrypted"] += int(new.lengths[done].sum())
        c["auth_failures"] += int(failed.sum())
        if failed.any() and self.config["on_fail"] == "drop":
            c["dropped"] += int(failed.sum())
            keep = np.ones(len(result), bool)
            keep[sel.index[failed]] = False
            return result.take(np.flatnonzero(keep))
        return result

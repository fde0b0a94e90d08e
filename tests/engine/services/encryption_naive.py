"""encrypt / decrypt as they were before the payload kernels: a loop over the packets in Python
around the cipher call, over the numpy payload rewriting of ``payload_naive``. The slow
reference the services are compared with byte for byte (with the same nonce source)."""

from __future__ import annotations

import numpy as np
from cryptography.exceptions import InvalidTag
from payload_naive import fits, replace, select

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.packet.flowkeys import FlowKeys
from engine.services.encryption import (
    _LABEL,
    BODY_AT,
    HEADER,
    NONCE_SIZE,
    OVERHEAD,
    TAG_SIZE,
)
from engine.services.payload import FLAGS_KNOWN, Payloads, Selection, packed_starts


def _associated_data(sel: Selection, flow: bool) -> tuple[np.ndarray, int]:
    """One row of associated data per selected packet: label, header, IP version, protocol and,
    for a flow binding, source and destination address (16 bytes, IPv4 zero-filled) and
    ports."""
    keys: FlowKeys = sel.keys.take(sel.index)
    m = len(sel)
    fixed = _LABEL + HEADER
    width = len(fixed) + 2 + (36 if flow else 0)
    rows = np.empty((m, width), np.uint8)
    rows[:, : len(fixed)] = np.frombuffer(fixed, np.uint8)
    at = len(fixed)
    rows[:, at] = keys.family
    rows[:, at + 1] = keys.proto
    if flow:
        at += 2
        rows[:, at : at + 16] = keys.src
        rows[:, at + 16 : at + 32] = keys.dst
        rows[:, at + 32 : at + 34] = keys.sport.astype(">u2").view(np.uint8).reshape(m, 2)
        rows[:, at + 34 : at + 36] = keys.dport.astype(">u2").view(np.uint8).reshape(m, 2)
    return rows.reshape(-1), width


def _headed(payloads: Payloads) -> np.ndarray:
    """Per payload, whether it begins with the encrypted form's header."""
    out = payloads.lengths >= len(HEADER)
    if not out.any():
        return out
    at = np.where(out, payloads.starts, 0)
    for k, byte in enumerate(HEADER):
        out &= payloads.data[at + k] == byte
    return out


def encrypt(self, batch: PacketBatch) -> PacketBatch:
    """``Encrypt.process`` as it was: ``self`` is an ``Encrypt``."""
    sel = select(batch)
    old = sel.payloads
    m = len(sel)
    # Plaintexts (flags byte, payload) back to back; outputs laid out as nonce, ct, tag.
    pt_len = old.lengths + 1
    pt_at = packed_starts(pt_len)
    plain = np.empty(int(pt_len.sum()), np.uint8)
    plain[pt_at] = old.flags
    gather = backend.capture.gather
    gather(
        np.ascontiguousarray(old.data), old.starts, old.lengths.astype(np.uint32), plain, pt_at + 1
    )
    out_len = pt_len + BODY_AT + TAG_SIZE
    too_large = ~fits(sel, out_len)
    if too_large.any():
        self._check_clear(sel, too_large)
    out_at = packed_starts(out_len)
    out = np.empty(int(out_len.sum()), np.uint8)
    out[out_at[:, None] + np.arange(len(HEADER))] = np.frombuffer(HEADER, np.uint8)
    nonces = np.frombuffer(self._random(NONCE_SIZE * m), np.uint8).reshape(m, NONCE_SIZE)
    out[out_at[:, None] + np.arange(len(HEADER), BODY_AT)] = nonces
    aad, width = _associated_data(sel, self._flow)
    seal = self._aead.encrypt_into
    mo, mp, ma = memoryview(out), memoryview(plain), memoryview(aad)
    for o, p, n, a in zip(
        out_at.tolist(), pt_at.tolist(), pt_len.tolist(), range(0, m * width, width)
    ):
        seal(
            mo[o + len(HEADER) : o + BODY_AT],
            mp[p : p + n],
            ma[a : a + width],
            mo[o + BODY_AT : o + BODY_AT + n + TAG_SIZE],
        )
    new = Payloads(out, out_at, out_len, np.zeros(m, np.uint8))
    result, done = replace(sel, new)
    c = self.counters
    sel.count(c)
    c["packets_encrypted"] += int(done.sum())
    c["bytes_encrypted"] += int(old.lengths[done].sum())
    if too_large.any():
        c["passed_clear"] += int(too_large.sum())
    return result


def decrypt(self, batch: PacketBatch) -> PacketBatch:
    """``Decrypt.process`` as it was: ``self`` is a ``Decrypt``."""
    sel = select(batch)
    old = sel.payloads
    m = len(sel)
    headed = _headed(old) & (old.lengths >= OVERHEAD)
    ok = headed.copy()
    pt_len = np.where(ok, old.lengths - BODY_AT - TAG_SIZE, 0)
    pt_at = packed_starts(pt_len)
    plain = np.empty(int(pt_len.sum()), np.uint8)
    aad, width = _associated_data(sel, self._flow)
    data = np.ascontiguousarray(old.data)
    md, mp, ma = memoryview(data), memoryview(plain), memoryview(aad)
    open_ = self._aead.decrypt_into
    todo = np.flatnonzero(ok)
    for i, s, p, n in zip(
        todo.tolist(), old.starts[todo].tolist(), pt_at[todo].tolist(), pt_len[todo].tolist()
    ):
        try:
            open_(
                md[s + len(HEADER) : s + BODY_AT],
                md[s + BODY_AT : s + BODY_AT + n + TAG_SIZE],
                ma[i * width : (i + 1) * width],
                mp[p : p + n],
            )
        except InvalidTag:
            ok[i] = False
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

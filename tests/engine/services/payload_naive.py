"""The numpy payload rewriting that ``engine.packet.payload_kernels`` replaced: the slow twin its
kernels are tested against (``select``, ``fits``, ``replace``, as in ``engine.services.payload``
before the kernels), over the engine's own ``Payloads`` and ``Selection``; region sums are numpy,
region by region.
"""

from __future__ import annotations

import numpy as np

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.packet.flowkeys import FRAG_NONE, FlowKeys, flow_keys
from engine.services.payload import Payloads, Selection, packed_starts

FLAG_L4_FFFF = 0x01
FLAG_IP_FFFF = 0x02
_TCP = 6
_UDP = 17
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_PPPOE_SESSION = 0x8864
_MAX_VLAN_TAGS = 8
_DOT3_MAX = 1500


def _be16(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return (data[at].astype(np.int64) << 8) | data[at + 1]


def _put16(data: np.ndarray, at: np.ndarray, value: np.ndarray) -> None:
    data[at] = value >> 8
    data[at + 1] = value & 0xFF


def select(batch: PacketBatch, keys: FlowKeys | None = None) -> Selection:
    """Find the TCP/UDP payloads of ``batch`` that can be rewritten (``keys``: its flow keys,
    when already computed)."""
    if keys is None:
        keys = flow_keys(batch)
    data = batch.data
    off = batch.offsets
    tcpudp = np.isin(keys.family, (4, 6)) & np.isin(keys.proto, (_TCP, _UDP))
    frag = tcpudp & (keys.fragment != FRAG_NONE)
    truncated = tcpudp & ~frag & (batch.caplen != batch.origlen)
    whole = tcpudp & ~frag & ~truncated
    no_header = whole & (keys.payload_off < 0)  # a whole packet holds its transport header
    idx = np.flatnonzero(whole & ~no_header)
    o = off[idx]
    l3 = o + keys.l3_off[idx]
    l4 = o + keys.l4_off[idx]
    po = o + keys.payload_off[idx]
    v4 = keys.family[idx] == 4
    udp = keys.proto[idx] == _UDP
    ip_len = np.where(v4, _be16(data, l3 + 2), _be16(data, l3 + 4))
    ip_end = np.where(v4, l3, l3 + 40) + ip_len
    udp_len = np.where(udp, _be16(data, l4 + 4), 0)
    end = np.where(udp, l4 + udp_len, ip_end)
    bad = (ip_end > o + batch.caplen[idx]) | (po > ip_end) | (~v4 & (ip_len == 0))
    bad |= udp & ((udp_len < 8) | (end > ip_end))
    empty = ~bad & (end == po)
    ok = ~bad & ~empty
    idx, l3, l4, po, end, v4, udp = idx[ok], l3[ok], l4[ok], po[ok], end[ok], v4[ok], udp[ok]
    ip_len = ip_len[ok]
    seg = end - l4
    ck_at = l4 + np.where(udp, 6, 16)
    flags = np.where(~udp & (_be16(data, ck_at) == 0xFFFF), FLAG_L4_FFFF, 0)
    flags |= np.where(v4 & (_be16(data, l3 + 10) == 0xFFFF), FLAG_IP_FFFF, 0)
    link_at, link_max = _link_length_fields(batch, idx, l3)
    skipped = {
        "not_tcp_udp": int(len(batch) - tcpudp.sum()),
        "fragment": int(frag.sum()),
        "truncated": int(truncated.sum()),
        "malformed": int(no_header.sum()) + int(bad.sum()),
        "empty": int(empty.sum()),
        "too_large": 0,
    }
    payloads = Payloads(data, po, end - po, flags.astype(np.uint8))
    return Selection(
        batch, keys, idx, payloads, skipped, l3, l4, end, v4, udp, ip_len, seg, link_at, link_max
    )


def _link_length_fields(
    batch: PacketBatch, idx: np.ndarray, l3: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where each selected packet has a link-layer length field covering its payload (an 802.3
    length, a PPPoE session length; -1 for none), and the largest value the field may take."""
    at = np.full(len(idx), -1, np.int64)
    limit = np.zeros(len(idx), np.int64)
    if not len(idx):
        return at, limit
    data = batch.data
    o = batch.offsets[idx]
    lt = batch.linktypes[idx]
    eth = np.flatnonzero(lt == 1)
    if len(eth):
        p = o[eth] + 12
        stop = l3[eth]
        for _ in range(_MAX_VLAN_TAGS):
            tagged = (p + 2 < stop) & np.isin(_be16(data, np.minimum(p, stop - 2)), _VLAN_TAGS)
            if not tagged.any():
                break
            p = p + 4 * tagged
        et = _be16(data, p)
        dot3 = (et < 0x0600) & (p + 2 <= stop)
        at[eth[dot3]] = p[dot3]
        limit[eth[dot3]] = _DOT3_MAX
        pppoe = (et == _PPPOE_SESSION) & (p + 8 <= stop)
        at[eth[pppoe]] = p[pppoe] + 6
        limit[eth[pppoe]] = 0xFFFF
    for linktype, proto_at, header in ((113, 14, 16), (276, 0, 20)):
        sll = np.flatnonzero(lt == linktype)
        if not len(sll):
            continue
        start = o[sll]
        pppoe = (start + header + 6 <= l3[sll]) & (_be16(data, start + proto_at) == _PPPOE_SESSION)
        at[sll[pppoe]] = start[pppoe] + header + 4
        limit[sll[pppoe]] = 0xFFFF
    return at, limit


def _sums(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each region's ones'-complement sum of big-endian 16-bit words (an odd last byte padded
    with zero), modulo 0xFFFF, word by word."""
    out = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        region = bytes(data[s : s + n]) + b"\0" * (n & 1)
        out.append(int(np.frombuffer(region, ">u2").sum(dtype=np.int64)) % 0xFFFF)
    return np.array(out, np.int64)


def _update(old: np.ndarray, removed: np.ndarray, added: np.ndarray, zero: np.ndarray):
    """RFC 1624 eqn. 3 on arrays: the checksum ``old`` after words summing to ``removed`` were
    replaced by words summing to ``added`` (both mod 0xFFFF); ``zero`` is the form to write
    when the result is a ones'-complement zero."""
    r = (old + removed + (0xFFFF - added)) % 0xFFFF
    return np.where(r == 0, zero, r)


def fits(sel: Selection, new_lengths: np.ndarray) -> np.ndarray:
    """Per selected packet, whether a payload of ``new_lengths`` bytes would fit its length
    fields (the IP and UDP lengths, a link-layer length on the way)."""
    delta = new_lengths - sel.payloads.lengths
    ok = (sel._ip_len + delta <= 0xFFFF) & (sel._seg + delta <= 0xFFFF)
    link = sel._link_at >= 0
    if link.any():
        field = _be16(sel.batch.data, np.where(link, sel._link_at, 0)) + delta
        ok &= ~link | ((field >= 0) & (field <= sel._link_max))
    return ok


def replace(
    sel: Selection, new: Payloads, changed: np.ndarray | None = None
) -> tuple[PacketBatch, np.ndarray]:
    """The batch with each selected packet's payload replaced by ``new`` (one per selected
    packet; where ``changed`` is False the packet stays as it was).

    Returns the new batch and, per selected packet, whether it was rewritten: a payload too
    large for a length field leaves its packet as it was (counted in ``sel.skipped``).
    """
    m = len(sel)
    if len(new) != m:
        raise ValueError(f"{len(new)} new payloads for {m} selected packets")
    changed = np.ones(m, bool) if changed is None else np.asarray(changed, bool).copy()
    delta = new.lengths - sel.payloads.lengths
    room = fits(sel, new.lengths)
    too_large = changed & ~room
    sel.skipped["too_large"] += int(too_large.sum())
    changed &= room
    batch = sel.batch
    if not changed.any():
        return batch, changed
    ci = np.flatnonzero(changed)
    rows = sel.index[ci]
    off = batch.offsets
    cap = batch.caplen.astype(np.int64)
    old_start = sel.payloads.starts[ci]
    pre = cap.copy()
    pre[rows] = old_start - off[rows]
    suffix_at = sel._end[ci]
    suffix = off[rows] + cap[rows] - suffix_at
    new_len = new.lengths[ci]
    new_cap = pre.copy()
    new_cap[rows] += new_len + suffix
    out_off = packed_starts(new_cap)
    out = np.empty(int(new_cap.sum()), np.uint8)
    gather = backend.capture.gather
    src = np.ascontiguousarray(batch.data)
    gather(src, off, pre.astype(np.uint32), out, out_off)
    at = out_off[rows] + pre[rows]
    gather(np.ascontiguousarray(new.data), new.starts[ci], new_len.astype(np.uint32), out, at)
    gather(src, suffix_at, suffix.astype(np.uint32), out, at + new_len)
    _fix_headers(sel, ci, out, out_off[rows] - off[rows], new, delta[ci])
    caplen = new_cap.astype(np.uint32)
    origlen = batch.origlen.copy()
    origlen[rows] = caplen[rows]
    seq = batch.seq if batch.has_explicit_seq else None
    return PacketBatch(
        out,
        out_off,
        caplen,
        origlen,
        batch.ts_ns,
        batch.iface,
        batch.interfaces,
        batch.first_seq,
        seq,
    ), changed


def _fix_headers(
    sel: Selection,
    ci: np.ndarray,
    out: np.ndarray,
    shift: np.ndarray,
    new: Payloads,
    delta: np.ndarray,
) -> None:
    """Lengths and checksums of the rewritten packets, in ``out`` (``shift``: where each
    packet's old positions moved to)."""
    old = sel.payloads
    src = sel.batch.data
    l3, l4, v4, udp = sel._l3[ci], sel._l4[ci], sel._v4[ci], sel._udp[ci]
    flags = new.flags[ci]
    ip_len = sel._ip_len[ci]
    new_ip_len = ip_len + delta
    _put16(out, np.where(v4, l3 + 2, l3 + 4) + shift, new_ip_len)
    w = np.flatnonzero(v4)
    if len(w):
        at = l3[w] + 10
        zero = np.where(flags[w] & FLAG_IP_FFFF, 0xFFFF, 0)
        _put16(out, at + shift[w], _update(_be16(src, at), ip_len[w], new_ip_len[w], zero))
    seg = sel._seg[ci]
    new_seg = seg + delta
    u = np.flatnonzero(udp)
    if len(u):
        _put16(out, l4[u] + 4 + shift[u], new_seg[u])
    ck_at = l4 + np.where(udp, 6, 16)
    ck = _be16(src, ck_at)
    live = ~udp | (ck != 0)  # a UDP checksum of 0: none was sent
    # Words taken out and put in: the payload, the pseudo-header length and (UDP) the length.
    times = np.where(udp, 2, 1)
    removed = _sums(old.data, old.starts[ci], old.lengths[ci]) + times * seg
    added = _sums(new.data, new.starts[ci], new.lengths[ci]) + times * new_seg
    zero = np.where(udp, 0xFFFF, np.where(flags & FLAG_L4_FFFF, 0xFFFF, 0))
    value = _update(ck, removed % 0xFFFF, added % 0xFFFF, zero)
    _put16(out, ck_at[live] + shift[live], value[live])
    link_at = sel._link_at[ci]
    k = np.flatnonzero(link_at >= 0)
    if len(k):
        _put16(out, link_at[k] + shift[k], _be16(src, link_at[k]) + delta[k])

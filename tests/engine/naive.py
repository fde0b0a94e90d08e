"""Slow, obvious references for the engine's compiled code: the oracles the tests compare with.

One packet (as ``bytes``) or one small list at a time, plain Python ints, no numpy, no tricks.
Each follows the documentation of the public module it checks (``engine.packet.flowkeys``,
``engine.packet.checksum``, ``engine.packet.segment``, ``engine.packet.flowhash``), written from it
rather than from the implementation.
"""

from __future__ import annotations

import struct

# ---------------------------------------------------------------------------------------------
# flow keys
# ---------------------------------------------------------------------------------------------


class Short(Exception):
    """A read went past the captured bytes."""


def _u8(p: bytes, at: int) -> int:
    if at + 1 > len(p):
        raise Short
    return p[at]


def _u16(p: bytes, at: int) -> int:
    if at + 2 > len(p):
        raise Short
    return struct.unpack_from(">H", p, at)[0]


def _need(p: bytes, end: int) -> None:
    if end > len(p):
        raise Short


def no_keys() -> dict:
    return {
        "family": 0,
        "proto": 0,
        "src": b"",
        "dst": b"",
        "sport": 0,
        "dport": 0,
        "l3_off": -1,
        "l4_off": -1,
        "payload_off": -1,
        "fragment": 0,
    }


def flow_keys(pkt: bytes, linktype: int) -> dict:
    """The flow keys of one packet, as ``FlowKeys.row`` gives them."""
    keys = no_keys()
    try:
        found = _link(pkt, linktype)
    except Short:
        return keys
    if found is None:
        return keys
    version, at = found
    try:
        if version == 4:
            _ipv4(pkt, at, keys)
        else:
            _ipv6(pkt, at, keys)
    except Short:
        pass
    return keys


def _link(p: bytes, lt: int):
    """(IP version, offset of the IP header) or None."""
    if lt == 1:
        _need(p, 14)
        return _ethertype(p, _u16(p, 12), 14)
    if lt == 113:
        _need(p, 16)
        return _ethertype(p, _u16(p, 14), 16)
    if lt == 276:
        _need(p, 20)
        return _ethertype(p, _u16(p, 0), 20)
    if lt in (0, 108):
        _need(p, 4)
        families = set(struct.unpack_from("<I", p)) | set(struct.unpack_from(">I", p))
        if 2 in families:
            return 4, 4
        if families & {24, 28, 30}:
            return 6, 4
        return None
    if lt == 101:
        v = _u8(p, 0) >> 4
        return (v, 0) if v in (4, 6) else None
    if lt == 228:
        return 4, 0
    if lt == 229:
        return 6, 0
    return None


def _ethertype(p: bytes, et: int, at: int):
    while True:
        if et in (0x8100, 0x88A8, 0x9100):
            _need(p, at + 4)
            et, at = _u16(p, at + 2), at + 4
        elif et <= 1500:
            _need(p, at + 8)
            if p[at : at + 3] != b"\xaa\xaa\x03":
                return None
            et, at = _u16(p, at + 6), at + 8
        elif et == 0x8864:
            _need(p, at + 8)
            ppp = _u16(p, at + 6)
            at += 8
            if ppp == 0x21:
                return 4, at
            if ppp == 0x57:
                return 6, at
            return None
        elif et in (0x8847, 0x8848):
            while True:
                _need(p, at + 4)
                bottom = p[at + 2] & 1
                at += 4
                if bottom:
                    break
            v = _u8(p, at) >> 4
            return (v, at) if v in (4, 6) else None
        elif et == 0x0800:
            return 4, at
        elif et == 0x86DD:
            return 6, at
        else:
            return None


def _ipv4(p: bytes, at: int, keys: dict) -> None:
    _need(p, at + 20)
    if p[at] >> 4 != 4 or (p[at] & 15) < 5:
        return
    keys.update(
        family=4, l3_off=at, src=p[at + 12 : at + 16], dst=p[at + 16 : at + 20], proto=p[at + 9]
    )
    flags_offset = _u16(p, at + 6)
    if flags_offset & 0x1FFF:
        keys["fragment"] = 2
        return
    if flags_offset & 0x2000:
        keys["fragment"] = 1
    _upper(p, at + (p[at] & 15) * 4, p[at + 9], keys, ipv6=False)


def _ipv6(p: bytes, at: int, keys: dict) -> None:
    _need(p, at + 40)
    if p[at] >> 4 != 6:
        return
    keys.update(
        family=6, l3_off=at, src=p[at + 8 : at + 24], dst=p[at + 24 : at + 40], proto=p[at + 6]
    )
    _upper(p, at + 40, p[at + 6], keys, ipv6=True)


def _upper(p: bytes, at: int, nh: int, keys: dict, ipv6: bool) -> None:
    """Walk extension headers from ``at``; Short leaves ``proto`` at the last value read."""
    _need(p, at)
    while True:
        keys["proto"] = nh
        if nh == 51 or (ipv6 and nh in (0, 43, 60)):
            nxt, hl = _u8(p, at), _u8(p, at + 1)
            size = (hl + 2) * 4 if nh == 51 else (hl + 1) * 8
            _need(p, at + size)
            nh, at = nxt, at + size
        elif ipv6 and nh == 44:
            _need(p, at + 8)
            nxt, fo = p[at], _u16(p, at + 2)
            if fo >> 3:
                keys.update(fragment=2, proto=nxt)
                return
            if fo & 1:
                keys["fragment"] = 1
            nh, at = nxt, at + 8
        else:
            break
    keys.update(proto=nh, l4_off=at)
    n = len(p)
    if nh in (6, 17, 33, 132, 136):
        if at + 2 <= n:
            keys["sport"] = _u16(p, at)
        if at + 4 <= n:
            keys["dport"] = _u16(p, at + 2)
    elif nh in (1, 58):
        if at + 1 <= n:
            keys["sport"] = p[at]
        if at + 2 <= n:
            keys["dport"] = p[at + 1]
    size = {17: 8, 136: 8, 1: 8, 58: 8, 132: 12}.get(nh, 0)
    if nh == 6 and at + 13 <= n and (p[at + 12] >> 4) >= 5:
        size = (p[at + 12] >> 4) * 4
    if nh == 33 and at + 5 <= n and p[at + 4] >= 3:
        size = p[at + 4] * 4
    if size and at + size <= n:
        keys["payload_off"] = at + size


# ---------------------------------------------------------------------------------------------
# Internet checksum
# ---------------------------------------------------------------------------------------------

NONE, GOOD, BAD, TRUNCATED, NO_CHECKSUM, MALFORMED = range(6)


def ones_complement_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071: add 16-bit big-endian words with end-around carry, one at a time."""
    if len(data) % 2:
        data = data + b"\0"
    total = initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        if total > 0xFFFF:
            total = (total & 0xFFFF) + 1
    return total


def internet_checksum(data: bytes, initial: int = 0) -> int:
    return 0xFFFF - ones_complement_sum(data, initial)


def _final_destination(pkt: bytes, l3: int, l4: int) -> bytes:
    """RFC 8200 8.1: the upper-layer pseudo-header's destination. The extension headers between
    the IPv6 header and the upper layer are split off one by one; a routing header with
    segments left names the final destination (its last address; for Segment Routing, type 4,
    the first segment of the reversed list)."""
    final = pkt[l3 + 24 : l3 + 40]
    nh, rest = pkt[l3 + 6], pkt[l3 + 40 : l4]
    sized = {0: 8, 43: 8, 60: 8, 135: 8, 139: 8, 140: 8, 253: 8, 254: 8}
    while len(rest) >= 8:
        if nh in sized:
            header = rest[: (rest[1] + 1) * 8]
        elif nh == 44:
            header = rest[:8]
        elif nh == 51:
            header = rest[: (rest[1] + 2) * 4]
        else:
            break
        if len(header) < ((header[1] + 1) * 8 if nh in sized else len(header)):
            break
        if nh == 43 and header[3] != 0:
            addresses = [header[i : i + 16] for i in range(8, len(header) - 15, 16)]
            if addresses and header[2] in (0, 2):
                final = addresses[-1]
            elif addresses and header[2] == 4:
                final = addresses[0]
        nh, rest = header[0], rest[len(header) :]
    return final


def checksum_status(pkt: bytes, keys: dict) -> tuple[int, int, bytes]:
    """(IPv4 header status, transport status, the packet with its checksums recomputed)."""
    out = bytearray(pkt)
    ip_status = l4_status = NONE
    fam, l3, l4, proto = keys["family"], keys["l3_off"], keys["l4_off"], keys["proto"]
    if fam == 4:
        ihl = (pkt[l3] & 15) * 4
        ip_len = _u16(pkt, l3 + 2)
        if l3 + ihl > len(pkt):
            ip_status = TRUNCATED
        else:
            header = pkt[l3 : l3 + ihl]
            ip_status = GOOD if internet_checksum(header) == 0 else BAD
            blank = header[:10] + b"\0\0" + header[12:]
            out[l3 + 10 : l3 + 12] = struct.pack(">H", internet_checksum(blank))
    elif fam == 6:
        ip_len = 40 + _u16(pkt, l3 + 4)
    else:
        return ip_status, l4_status, bytes(out)
    where = {6: (16, 20), 17: (6, 8), 1: (2, 4), 58: (2, 4)}
    if l4 < 0 or keys["fragment"] or proto not in where or (proto, fam) in ((1, 6), (58, 4)):
        return ip_status, l4_status, bytes(out)
    field, least = where[proto]
    length = l3 + ip_len - l4
    if length < least:
        return ip_status, MALFORMED, bytes(out)
    if l4 + least > len(pkt):
        return ip_status, TRUNCATED, bytes(out)
    if proto == 17:
        udp_len = _u16(pkt, l4 + 4)
        if not 8 <= udp_len <= length:
            return ip_status, MALFORMED, bytes(out)
        length = udp_len
    if l4 + length > len(pkt):
        return ip_status, TRUNCATED, bytes(out)
    segment = pkt[l4 : l4 + length]
    stored = _u16(segment, field)
    if proto == 17 and fam == 4 and stored == 0:
        return ip_status, NO_CHECKSUM, bytes(out)
    if proto == 1:
        pseudo = b""
    elif fam == 4:
        pseudo = pkt[l3 + 12 : l3 + 20] + struct.pack(">BBH", 0, proto, length)
    else:
        pseudo = (
            pkt[l3 + 8 : l3 + 24]
            + _final_destination(pkt, l3, l4)
            + struct.pack(">IxxxB", length, proto)
        )
    if proto == 17 and stored == 0:
        l4_status = BAD
    else:
        l4_status = GOOD if internet_checksum(pseudo + segment) == 0 else BAD
    blank = segment[:field] + b"\0\0" + segment[field + 2 :]
    value = internet_checksum(pseudo + blank)
    if proto == 17 and value == 0:
        value = 0xFFFF
    out[l4 + field : l4 + field + 2] = struct.pack(">H", value)
    return ip_status, l4_status, bytes(out)


# ---------------------------------------------------------------------------------------------
# segmentation
# ---------------------------------------------------------------------------------------------


def segments(
    sizes: list[int], ts: list[int], max_packets: int = 0, max_bytes: int = 0, window_ns: int = 0
) -> list[list[int]]:
    """The segments (lists of positions), cut greedily: a packet joins the current segment
    unless that would break a limit (0 is none)."""
    result: list[list[int]] = []
    for i, (size, t) in enumerate(zip(sizes, ts, strict=True)):
        if result:
            seg = result[-1]
            fits = (
                (not max_packets or len(seg) + 1 <= max_packets)
                and (not max_bytes or sum(sizes[j] for j in seg) + size <= max_bytes)
                and (not window_ns or t - ts[seg[0]] < window_ns)
            )
            if fits:
                seg.append(i)
                continue
        result.append([i])
    return result


def bounds(segs: list[list[int]]) -> list[int]:
    return [seg[0] for seg in segs] + [sum(len(s) for s in segs)]


# ---------------------------------------------------------------------------------------------
# flow hash
# ---------------------------------------------------------------------------------------------

MASK = (1 << 64) - 1


def fmix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    x ^= x >> 33
    return x


def _endpoint(addr: bytes, port: int, seed: int) -> int:
    addr = addr.ljust(16, b"\0")
    w0, w1 = struct.unpack("<QQ", addr)
    h = fmix64(w0 ^ seed)
    h = fmix64(h ^ w1)
    return fmix64(h ^ ((port * 0x9E3779B97F4A7C15) & MASK))


def flow_hash(
    family: int,
    proto: int,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    fragment: int,
    seed: int = 0,
) -> int:
    """The documented symmetric hash of one packet's flow key."""
    if fragment or proto not in (6, 17, 33, 132, 136):
        sport = dport = 0
    e = (_endpoint(src, sport, seed) + _endpoint(dst, dport, seed)) & MASK
    kind = (family << 8) | proto
    return fmix64(e ^ fmix64(kind ^ ((seed * 0x9E3779B97F4A7C15) & MASK)))


def assign_worker(h: int, n_workers: int) -> int:
    return ((h >> 32) * n_workers) >> 32


def partition(parts: list[int], n_parts: int) -> tuple[list[int], list[int]]:
    order = sorted(range(len(parts)), key=lambda i: parts[i])  # sorted() is stable
    counts = [parts.count(p) for p in range(n_parts)]
    edges = [0]
    for c in counts:
        edges.append(edges[-1] + c)
    return order, edges


# ---------------------------------------------------------------------------------------------
# TPACKET_V3 ring blocks (linux/if_packet.h)
# ---------------------------------------------------------------------------------------------


def walk_tpacket_block(block: bytes, snaplen: int) -> list[tuple[bytes, int, int]]:
    """A retired block's frames as (captured bytes cut to ``snaplen``, original length, time in
    ns), read through ``struct tpacket_block_desc`` and each ``struct tpacket3_hdr``."""
    num_pkts, first = struct.unpack_from("<II", block, 12)
    frames, at = [], first
    for _ in range(num_pkts):
        next_offset, sec, nsec, snap, length, _status, mac = struct.unpack_from("<6IH", block, at)
        cut = min(snap, snaplen)
        frames.append((block[at + mac : at + mac + cut], length, sec * 1_000_000_000 + nsec))
        at += next_offset
    return frames

"""Slow, obvious references for ``inspect``: ``bytes.find`` per pattern, scapy for payloads."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Padding


def patterns_in(payload: bytes, patterns: list[bytes], nocase: bool = False) -> set[int]:
    """The indices of the patterns that occur in ``payload``."""
    if nocase:
        payload = payload.lower()
        patterns = [p.lower() for p in patterns]
    return {i for i, p in enumerate(patterns) if payload.find(p) >= 0}


def transport_payload(pkt: Packet) -> bytes | None:
    """The TCP or UDP payload right behind a dissected packet's outermost IP header, without
    link-layer padding; None when that header is not followed directly by TCP or UDP."""
    ip = pkt
    while ip and not isinstance(ip, (IP, IPv6)):
        ip = ip.payload
    if not isinstance(ip, (IP, IPv6)) or not isinstance(ip.payload, (TCP, UDP)):
        return None
    if isinstance(ip, IP) and ip.frag:
        return None
    data = bytes(ip.payload.payload)
    pad = pkt.getlayer(Padding)
    if pad is not None:
        data = data[: len(data) - len(pad.load)]
    return data


def stream_matches(packets: list[Packet], patterns: list[bytes]) -> list[set[int]]:
    """For each packet, the patterns an occurrence of which ends in its payload, where a TCP
    payload that continues its direction's byte stream (sequence number where the last payload
    of that direction ended; a SYN starts afresh) is read as the end of everything that
    direction sent in order so far; any other payload is read alone. None-payload packets get
    an empty set."""
    streams: dict[tuple, tuple[int, bytes]] = {}
    found = []
    for pkt in packets:
        payload = transport_payload(pkt)
        if payload is None:
            found.append(set())
            continue
        ip = pkt
        while not isinstance(ip, (IP, IPv6)):
            ip = ip.payload
        tcp = ip.payload
        if not isinstance(tcp, TCP):
            found.append(patterns_in(payload, patterns))
            continue
        key = (ip.version, ip.src, ip.dst, tcp.sport, tcp.dport)
        syn = 1 if tcp.flags.S else 0
        before = b""
        if not syn and key in streams and streams[key][0] == tcp.seq:
            before = streams[key][1]
        text = before + payload
        ends_here = set()
        for i, p in enumerate(patterns):
            at = text.find(p)
            while at >= 0:
                if at + len(p) > len(before):
                    ends_here.add(i)
                    break
                at = text.find(p, at + 1)
        found.append(ends_here)
        streams[key] = ((tcp.seq + syn + len(payload)) % 2**32, text)
    return found

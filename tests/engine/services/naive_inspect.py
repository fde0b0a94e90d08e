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
